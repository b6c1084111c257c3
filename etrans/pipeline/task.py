"""The contract between the pipeline and the work it drives.

A task is an ``async`` callable.  What it does when it returns or raises decides what happens to
the message's offset:

* **returns** - done.  The offset may be committed past it (once every earlier offset of the same
  partition is done too: commits never skip a message still in flight).
* **raises** :class:`etrans.errors.PoisonMessage` - the message is bad (undecodable, invalid) and
  will never succeed.  It is not retried; it is logged with topic/partition/offset, published to the
  dead-letter topic when one is configured (the error text in the ``etrans-error`` header, see
  :mod:`etrans.pipeline.dead_letter`), and then committed past.
* **raises** :class:`etrans.errors.RetryLater`, **exceeds** ``PipelineConfig.message_timeout``
  (enforced by a Trio cancel scope), or **raises anything else** - transient.  The pipeline retries
  the same message after a capped exponential backoff (``RetryPolicy``) and never commits past it
  until it succeeds or becomes poison.  With the default policy (``max_attempts=None``) a message is
  retried until shutdown - "MongoDB down: retry, commit nothing, lose nothing".  With
  ``max_attempts=N`` the N-th transient failure turns it into poison (dead-lettered, committed
  past).
  At shutdown or when its partition is revoked, a message that is waiting for a retry is abandoned
  uncommitted: it is delivered again after the restart/rebalance.

Delivery is at least once: after a crash, messages done but not yet committed (at most the
in-flight window plus one commit interval) are delivered again, so tasks must be idempotent.

**Batch tasks** (``BatchTask``) receive up to ``PipelineConfig.batch_size`` messages at once: a
worker takes one message, then whatever else is already waiting (up to the batch size), waiting at
most ``batch_linger`` seconds for more.  All offsets of the batch are marked done only when the call
returns.  A batch may mix partitions.  If the call raises a transient error, the whole batch is
retried.  If it raises ``PoisonMessage`` and holds more than one message, the pipeline cannot tell
which message is bad: it calls the task again once per message (batches of one), so only the
guilty message is dead-lettered.  Tasks must therefore tolerate seeing a message again.

Tasks run in the Trio thread; blocking work belongs in ``trio.to_thread.run_sync``.  Structlog
contextvars ``topic/partition/offset`` are bound while a single-message task runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Sequence

    from etrans.pipeline.message import Message


class Task(Protocol):
    """Processes one message; see the module docstring for what returning/raising means."""

    async def __call__(self, message: Message) -> None: ...


class BatchTask(Protocol):
    """Processes several messages at once (e.g. one ``insert_many``)."""

    async def __call__(self, messages: Sequence[Message]) -> None: ...
