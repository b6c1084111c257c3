"""ASGI middleware: a response never completes before its request body has been received.

Why: hypercorn's HTTP/1.1 handling (0.18, trio worker) recycles a keep-alive connection only when
both sides are DONE.  When the app answers before the client has finished sending the body (a 401
or 405 decided from the headers alone, with the body arriving in a later packet), hypercorn
neither reads the rest of the body nor closes the socket: the client's next request on that
connection hangs until its own timeout.  Clients such as ``requests`` send headers and body in
separate writes, so this happens in practice (schemathesis found it).

The fix: hold back the final ``http.response.body`` message until the app's ``receive`` has
delivered the last request-body chunk (or a disconnect), at most ``wait_seconds``.  Quart keeps
reading the request body in a task of its own while the handler runs, so waiting here costs only
the time the body takes to arrive; the body size limit (MAX_CONTENT_LENGTH) still applies.
"""

from __future__ import annotations

from typing import Any

import trio

Scope = dict[str, Any]
Message = dict[str, Any]


class CompleteBodyBeforeResponse:
    def __init__(self, app: Any, *, wait_seconds: float = 10.0) -> None:
        self.app = app
        self.wait_seconds = wait_seconds

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        body_done = trio.Event()

        async def tracked_receive() -> Message:
            message = await receive()
            kind = message.get("type")
            if kind == "http.disconnect" or (
                kind == "http.request" and not message.get("more_body", False)
            ):
                body_done.set()
            return message

        async def guarded_send(message: Message) -> None:
            if (message.get("type") == "http.response.body"
                    and not message.get("more_body", False) and not body_done.is_set()):
                with trio.move_on_after(self.wait_seconds):
                    await body_done.wait()
            await send(message)

        await self.app(scope, tracked_receive, guarded_send)
