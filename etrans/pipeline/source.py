"""Where a pipeline's messages come from: the message-source seam.

A :class:`MessageSource` is the one thread that reads records for a pipeline: it tracks what it
hands out in the :class:`~etrans.pipeline.state.SharedState`, delivers envelopes to Trio with
the ``deliver`` callback, commits what the state says is committable and reports its life cycle
through the other callbacks (all called in the Trio thread, through ``TrioToken.run_sync_soon``).

Two implementations: :class:`etrans.pipeline.consumer_thread.ConsumerThread` (a confluent-kafka
consumer, the default) and :class:`etrans.dev.topics.LocalMessageSource` (the in-process topics of
``etrans dev``).  A :class:`MessageSourceFactory` builds one per pipeline run.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Protocol

import trio

if TYPE_CHECKING:
    from collections.abc import Callable

    from etrans.pipeline.config import PipelineConfig
    from etrans.pipeline.state import Envelope, SharedState


class MessageSource(Protocol):
    def start(self) -> None:
        """Start the thread; ``on_subscribed`` then ``on_assigned`` follow."""

    def request_close(self) -> None:
        """Ask the thread to commit, let go of its partitions and exit (``on_exit`` follows)."""


class MessageSourceFactory(Protocol):
    def __call__(
        self,
        config: PipelineConfig,
        state: SharedState,
        token: trio.lowlevel.TrioToken,
        *,
        deliver: Callable[[list[Envelope]], None],
        on_subscribed: Callable[[], None],
        on_assigned: Callable[[], None],
        on_end_reached: Callable[[], None],
        on_exit: Callable[[BaseException | None], None],
    ) -> MessageSource: ...


class SourceThread:
    """Base of both message sources: the callbacks, one daemon thread running :meth:`_main`, and
    the hand-over of callbacks to Trio.  Subclasses implement ``_main`` (read, track, deliver,
    commit until ``_close_requested`` is set, then call ``on_exit`` through :meth:`_to_trio`).
    """

    thread_name = "message-source"

    def __init__(
        self,
        config: PipelineConfig,
        state: SharedState,
        token: trio.lowlevel.TrioToken,
        *,
        deliver: Callable[[list[Envelope]], None],
        on_subscribed: Callable[[], None],
        on_assigned: Callable[[], None],
        on_end_reached: Callable[[], None],
        on_exit: Callable[[BaseException | None], None],
    ) -> None:
        self.config = config
        self.state = state
        self._token = token
        self._deliver = deliver
        self._on_subscribed = on_subscribed
        self._on_assigned = on_assigned
        self._on_end_reached = on_end_reached
        self._on_exit = on_exit
        self._close_requested = threading.Event()
        self._end_notified = False
        self._thread = threading.Thread(target=self._main, name=self.thread_name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def request_close(self) -> None:
        """Ask the thread to commit, let go of its partitions and exit."""
        self._close_requested.set()

    def _to_trio(self, fn: Callable[..., object], *args: object) -> None:
        try:
            self._token.run_sync_soon(fn, *args)
        except trio.RunFinishedError:  # Trio is gone: nobody to deliver to, stop reading
            self._close_requested.set()

    def _main(self) -> None:
        raise NotImplementedError
