"""A consumer process for the crash tests: ``python -m tests.integration.pipeline_child ...``.

Runs one pipeline under :func:`etrans.runtime.run` (so SIGTERM drains gracefully, as in the real
workers).  Each processed message is appended to ``--record`` as ``partition offset time`` and
flushed before the task returns, so the file survives ``kill -9`` and shows what was processed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import trio

from etrans import runtime
from etrans.observability import configure
from etrans.pipeline import Message, Pipeline, PipelineConfig
from tests.harness.servers import KAFKA_TEST_CONSUMER_CONFIG


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--record", required=True)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--workers", type=int, default=10)
    parser.add_argument("--channel-size", type=int, default=200)
    parser.add_argument("--poll-batch", type=int, default=100)
    parser.add_argument("--commit-interval", type=float, default=0.5)
    parser.add_argument("--drain-seconds", type=float, default=20.0)
    parser.add_argument("--stop-at-end", action="store_true")
    parser.add_argument("--instance-id", default=None, help="group.instance.id (static member)")
    parser.add_argument("--session-timeout-ms", type=int, default=None)
    args = parser.parse_args()
    configure("pipeline-child", level="INFO", json=True)

    record = open(args.record, "a", buffering=1)  # noqa: SIM115 - lives as long as the process

    async def task(message: Message) -> None:
        if args.delay:
            await trio.sleep(args.delay)
        record.write(f"{message.partition} {message.offset} {time.monotonic():.4f}\n")
        record.flush()

    kafka: dict[str, str | int] = {"bootstrap.servers": args.bootstrap, "log_level": 3,
                                   **KAFKA_TEST_CONSUMER_CONFIG}
    if args.session_timeout_ms is not None:
        kafka["session.timeout.ms"] = args.session_timeout_ms
        kafka["heartbeat.interval.ms"] = max(500, args.session_timeout_ms // 3)
    config = PipelineConfig(
        topics=(args.topic,),
        group_id=args.group,
        group_instance_id=args.instance_id,
        kafka=kafka,
        workers=args.workers,
        channel_size=args.channel_size,
        poll_batch=args.poll_batch,
        commit_interval=args.commit_interval,
        stop_at_end=args.stop_at_end,
    )

    async def service(shutdown: runtime.Shutdown) -> None:
        stats = await Pipeline(config, task).run(shutdown)
        committed = {f"{t}/{p}": o for (t, p), o in stats.committed.items()}
        print(json.dumps({"event": "child-done", "processed": stats.processed,
                          "committed": committed}), flush=True)

    return runtime.run(service, args.drain_seconds)


if __name__ == "__main__":
    sys.exit(main())
