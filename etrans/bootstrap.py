"""The one place that builds adapters and wires them into services.

Each public function takes validated :class:`~etrans.settings.Settings` and returns the
``main(shutdown)`` coroutine function that :func:`etrans.runtime.run` supervises.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from etrans.observability import get_logger

if TYPE_CHECKING:
    from etrans.runtime import ServiceMain, Shutdown
    from etrans.settings import Settings

log = get_logger(__name__)


def serve(settings: Settings) -> ServiceMain:
    from hypercorn.config import Config
    from hypercorn.trio import serve as hypercorn_serve

    from etrans.adapters.kafka_client import KafkaAdmin
    from etrans.adapters.mongo import MongoStore
    from etrans.adapters.redis_store import RedisClient
    from etrans.adapters.sql import Database, make_engine
    from etrans.api.app import ApiDependencies, create_app

    assert settings.http is not None
    assert settings.databases is not None
    assert settings.redis is not None
    assert settings.kafka is not None
    assert settings.mongo is not None
    dbs = settings.databases
    assert dbs.billing_uri is not None
    assert dbs.usend_uri is not None
    billing = Database(make_engine(dbs.billing_uri.get(), pool_size=dbs.pool_size),
                       name="billing_db")
    usend = Database(make_engine(dbs.usend_uri.get(), pool_size=dbs.pool_size), name="usend_db")
    redis = RedisClient(settings.redis.url.get())
    kafka = KafkaAdmin(settings.kafka)
    mongo = MongoStore(settings.mongo)
    app = create_app(ApiDependencies(probes=[billing, usend, redis, kafka, mongo]))

    config = Config()
    config.bind = [settings.http.bind]
    config.graceful_timeout = settings.drain_seconds
    config.accesslog = None
    # Hypercorn logs through the root handler (JSON with "service"), not a plain handler of its own.
    config.errorlog = logging.getLogger("hypercorn.error")

    async def main(shutdown: Shutdown) -> None:
        try:
            log.info("listening", bind=settings.http.bind)
            await hypercorn_serve(app, config, shutdown_trigger=shutdown.wait_requested)
        finally:
            billing.dispose()
            usend.dispose()
            redis.close()
            mongo.close()

    return main


def _idle_worker(name: str) -> ServiceMain:
    # Placeholder main for a worker whose pipeline is wired by a later change: it starts,
    # reports readiness, and stops cleanly on the first signal.
    async def main(shutdown: Shutdown) -> None:
        log.info("started", worker=name)
        await shutdown.wait_requested()
        await trio.lowlevel.checkpoint()

    return main


def sendmail(settings: Settings) -> ServiceMain:
    return _idle_worker("sendmail")


def fetchlog(settings: Settings, *, from_earliest: bool, stop_at_end: bool) -> ServiceMain:
    return _idle_worker("fetchlog")
