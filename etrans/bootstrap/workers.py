"""The sendmail and fetchlog workers' objects, built one way for their own subcommands and for
``etrans dev`` (which runs both in its process, on stand-ins or real services)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from etrans.bootstrap.configs import delivery_policy, log_topic, smtp_config

if TYPE_CHECKING:
    from etrans.adapters.smtp.pool import SmtpPool
    from etrans.adapters.sql import Database
    from etrans.app.ports import EmailStatusStore, EventPublisher, LogDocumentWriter
    from etrans.app.sendmail import EmailDelivery
    from etrans.bootstrap.stores import DeliveryStores
    from etrans.observability import ErrorSink
    from etrans.settings import FetchlogOptions, KafkaSettings, SendmailOptions, SmtpSettings
    from etrans.workers.fetchlog import FetchlogTask


def smtp_pool(smtp: SmtpSettings, options: SendmailOptions) -> SmtpPool:
    """One SMTP connection per sendmail worker at most."""
    from etrans.adapters.smtp.pool import SmtpPool

    return SmtpPool(smtp_config(smtp), size=options.worker_pool_size)


def email_delivery(stores: DeliveryStores, pool: SmtpPool, publisher: EventPublisher,
                   kafka: KafkaSettings, options: SendmailOptions) -> EmailDelivery:
    """Delivers over ``pool``; Reject events go to LOG_TOPIC (default ``email-logs``)."""
    from etrans.app.sendmail import EmailDelivery

    return EmailDelivery(credentials=stores.credentials, marks=stores.marks, transport=pool,
                         events=publisher, log_topic=log_topic(kafka),
                         policy=delivery_policy(options))


def fetchlog_task(options: FetchlogOptions, writer: LogDocumentWriter, *,
                  usend: Database | None, statuses: EmailStatusStore | None,
                  reporter: ErrorSink | None = None) -> FetchlogTask:
    """Stores the events STORE_EVENT_TYPES names; email statuses and message owners from the
    USEND DB when there is one."""
    from etrans.adapters.sql.message_owners import MessageOwnerLookup
    from etrans.domain.delivery_log import EventFilter
    from etrans.workers.fetchlog import FetchlogTask

    return FetchlogTask(
        EventFilter.from_settings(options.store_event_types, options.skip_message_id_pattern),
        writer, statuses, reporter,
        MessageOwnerLookup(usend) if usend is not None else None)
