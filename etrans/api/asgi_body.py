"""ASGI middleware that owns the request body: admission against the memory budget, and a
response that never completes before its request body has been received.

Admission.  Quart reads a request body in a task of its own as soon as the request starts,
before the route has authenticated anyone.  So the body is held back here: the app's
``receive`` gets no body until the route calls :func:`admit_body` (from
:func:`etrans.api.routing.read_body`, after authentication), which reserves the body's size in
the :class:`~etrans.api.body_budget.BodyBudget` or raises ``ServerBusy`` (503).  Until then the
body waits in the socket (hypercorn stops reading once its small app queue is full).

Completion.  hypercorn's HTTP/1.1 handling (0.18, trio worker) recycles a keep-alive
connection only when both sides are DONE.  When the app answers before the client has finished
sending the body (a 401 or 405 decided from the headers alone, with the body arriving in a
later packet), hypercorn neither reads the rest of the body nor closes the socket: the client's
next request on that connection hangs until its own timeout.  Clients such as ``requests`` send
headers and body in separate writes, so this happens in practice (schemathesis found it).  So
the final ``http.response.body`` message is held back until the body has been received, at
most ``wait_seconds``: an admitted body is waited for (Quart is reading it); a body never
admitted (401, 404, 503, ...) is read here and discarded, never buffered.

Keep-alive.  The final send is shielded from cancellation, or hypercorn's keep-alive timer is
never started (see ``guarded_send``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from etrans.api.body_budget import BodyBudget

Scope = dict[str, Any]
Message = dict[str, Any]

# The scope key of a request's _BodyGate (ASGI scopes may carry extra keys).
GATE = "etrans.body_gate"


class _BodyGate:
    def __init__(self, budget: BodyBudget | None, declared_length: int | None) -> None:
        self.budget = budget
        self.declared_length = declared_length
        self.opened = trio.Event()
        self.reserved = 0
        self.held = False

    def admit(self, largest_bytes: int) -> None:
        if self.opened.is_set():
            return
        if self.budget is not None:
            size = self.declared_length if self.declared_length is not None else largest_bytes
            self.budget.reserve(size)  # raises ServerBusy
            self.reserved, self.held = size, True
        self.opened.set()

    def release(self) -> None:
        if self.held and self.budget is not None:
            self.budget.release(self.reserved)
            self.held = False


def admit_body(scope: Scope, largest_bytes: int) -> None:
    """Let the request's body in, reserving its size (``largest_bytes`` when it is chunked);
    raises :class:`~etrans.api.body_budget.ServerBusy` when the budget is full."""
    gate = scope.get(GATE)
    if gate is not None:
        gate.admit(largest_bytes)


def _declared_body(scope: Scope) -> tuple[bool, int | None]:
    """(has a body, its Content-Length or None when chunked)."""
    length: int | None = None
    chunked = False
    for name, value in scope.get("headers") or ():
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                return True, None
        elif name == b"transfer-encoding":
            chunked = True
    if length is not None:
        return length > 0, length
    return chunked, None


class CompleteBodyBeforeResponse:
    def __init__(self, app: Any, *, wait_seconds: float = 10.0,
                 budget: BodyBudget | None = None) -> None:
        self.app = app
        self.wait_seconds = wait_seconds
        self.budget = budget

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        has_body, length = _declared_body(scope)
        gate = _BodyGate(self.budget, length)
        if not has_body:
            gate.opened.set()
        scope[GATE] = gate
        body_done = trio.Event()

        def track(message: Message) -> None:
            kind = message.get("type")
            if kind == "http.disconnect" or (
                kind == "http.request" and not message.get("more_body", False)
            ):
                body_done.set()

        async def gated_receive() -> Message:
            await gate.opened.wait()
            message: Message = await receive()
            track(message)
            return message

        async def discard_body() -> None:
            while not body_done.is_set():
                track(await receive())

        async def guarded_send(message: Message) -> None:
            if message.get("type") != "http.response.body" or message.get("more_body", False):
                await send(message)
                return
            if not body_done.is_set():
                with trio.move_on_after(self.wait_seconds):
                    if gate.opened.is_set():
                        await body_done.wait()
                    else:
                        await discard_body()
            # Shielded: this send is where hypercorn recycles the connection and starts its
            # keep-alive timer, and quart-trio cancels the request's tasks as soon as the
            # response is out; cancelled there, the timer never started and an idle keep-alive
            # connection stayed open until the read timeout (ETRANS_KEEP_ALIVE_TIMEOUT_SECONDS
            # was ignored).  hypercorn already shields its socket writes, so this adds no wait.
            with trio.CancelScope(shield=True):
                await send(message)

        try:
            await self.app(scope, gated_receive, guarded_send)
        finally:
            gate.release()
