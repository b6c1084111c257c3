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

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable

    import trio

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
