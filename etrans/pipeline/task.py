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
  uncommitted: it is delivered again after the restart/rebalance - and so are the messages of
  its partition after it that were done meanwhile, since a commit never passes a message that
  is not done.  That is not bounded by ``channel_size``: the other workers go on with the
  partition while one message retries (or hangs past its timeout), so everything they finish
  behind it is repeated after a restart.

Delivery is at least once.  Messages are delivered again (tasks must be idempotent):

* after a crash: those done but not yet committed (at most the in-flight window - ``channel_size``
  - plus one commit interval);
* after a retry abandoned at shutdown or revoke: see above;
* after a revoke that waited longer than ``revoke_timeout``: the partition's unfinished messages;
* in a batch that raised ``PoisonMessage``: see below (the good ones run twice).

**Batch tasks** (``BatchTask``) receive up to ``PipelineConfig.batch_size`` messages at once: a
worker takes one message, then whatever else is already waiting (up to the batch size), waiting at
most ``batch_linger`` seconds for more.  All offsets of the batch are marked done only when the call
returns.  A batch may mix partitions.  If the call raises a transient error, the whole batch is
retried.  If it raises ``PoisonMessage`` and holds more than one message, the pipeline cannot tell
which message is bad: it calls the task again once per message (batches of one), so only the
guilty message is dead-lettered - and every good message of that batch is passed to the task a
second time.  A batch task should therefore validate the whole batch before doing any work (as
``etrans fetchlog`` does: it raises before inserting) or make its work idempotent (fetchlog's
inserts are: a repeated event is counted as a duplicate, not stored twice).

Tasks run in the Trio thread; blocking work belongs in ``trio.to_thread.run_sync``.  The
pipeline's own log lines about a message carry ``topic/partition/offset``; it binds no structlog
contextvars per message (that cost a microsecond a message) - a task that wants them in its own
lines binds them itself (``structlog.contextvars.bind_contextvars``: each worker runs in a
context of its own, so binding without unbinding is enough).
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
