"""The sendmail and fetchlog workers' objects, built one way for their own subcommands and for
``etrans dev`` (which runs both in its process, on stand-ins or real services)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from etrans.bootstrap.configs import delivery_policy, log_topic, smtp_config
from etrans.bootstrap.tracing import process_tracer
from etrans.observability import get_logger

if TYPE_CHECKING:
    from etrans.adapters.smtp.pool import SmtpPool
    from etrans.adapters.sql import Database
    from etrans.app.metrics import SmtpMetrics
    from etrans.app.ports import (
        DkimKeySource,
        EmailStatusStore,
        EventPublisher,
        LogDocumentWriter,
        MessageSigner,
        SuppressionStore,
    )
    from etrans.app.sendmail import EmailDelivery
    from etrans.app.signing import MessageSigning
    from etrans.app.tracking import MessageTracking
    from etrans.bootstrap.stores import DeliveryStores
    from etrans.observability import ErrorSink
    from etrans.settings import FetchlogOptions, KafkaSettings, SendmailOptions, SmtpSettings
    from etrans.settings.tracking import TrackingSettings
    from etrans.workers.fetchlog import FetchlogTask


def smtp_pool(smtp: SmtpSettings, options: SendmailOptions) -> SmtpPool:
    """One SMTP connection per sendmail worker at most."""
    from etrans.adapters.smtp.pool import SmtpPool

    return SmtpPool(smtp_config(smtp), size=options.worker_pool_size)


log = get_logger(__name__)


def dkim_key_source(db: Database, token_secret: str, options: SendmailOptions, *,
                    local: bool) -> DkimKeySource:
    """DKIM keys from ``db``: the USEND DB's ``local_dkim`` (``local``, encrypted with a key
    derived from TOKEN_SECRET) or the Billing DB's ``dkim``."""
    from etrans.adapters.crypto.dkim_keys import DkimKeyCipher
    from etrans.adapters.sql.dkim_key_source import SqlDkimKeySource

    return SqlDkimKeySource(db, DkimKeyCipher(token_secret), local=local,
                            cache_seconds=options.dkim_key_cache_seconds)


def message_signing(options: SendmailOptions, keys: DkimKeySource | None,
                    signer: MessageSigner | None = None) -> MessageSigning:
    """SENDMAIL_DKIM_SIGNING with the keys of ``keys`` (None: no database to read them from,
    so ``auto`` sends unsigned; the settings refuse ``on`` without one), signed by ``signer``
    (default: all of it in the Trio thread, as ``etrans dev`` does)."""
    from etrans.adapters.crypto.dkim_signer import DkimSigner
    from etrans.app.signing import MessageSigning, SigningMode

    mode = SigningMode(options.dkim_signing)
    if mode is SigningMode.OFF:
        log.info("DKIM signing off (SENDMAIL_DKIM_SIGNING=off): the relay signs")
    elif keys is None:
        log.warning("DKIM signing: no database to read the keys from (USEND_DB_URI, or DB_URI "
                    "with BILLING_V4_URI): messages go out unsigned")
    return MessageSigning(mode, keys, signer or DkimSigner())


def message_tracking(tracking: TrackingSettings, usend: Database,
                     domains: Database | None = None) -> MessageTracking:
    """Open and click tracking of the HTML: the flags of ``domain_tracking_settings`` in the
    USEND DB, the domains' ids in ``domains`` (the Billing DB) or in the USEND DB (None)."""
    from etrans.adapters.sql.tracking_flags import SqlTrackingFlags
    from etrans.app.tracking import MessageTracking
    from etrans.domain.tracking import derive_tracking_key

    flags = SqlTrackingFlags(usend, domains, cache_seconds=tracking.flags_cache_seconds)
    return MessageTracking(derive_tracking_key(tracking.secret.get().encode()),
                           tracking.base_url, flags)


def email_delivery(stores: DeliveryStores, pool: SmtpPool, publisher: EventPublisher,
                   kafka: KafkaSettings, options: SendmailOptions,
                   signing: MessageSigning | None = None,
                   tracking: MessageTracking | None = None,
                   events_topic: str | None = None,
                   metrics: SmtpMetrics | None = None) -> EmailDelivery:
    """Delivers over ``pool``; Reject events go to LOG_TOPIC (default ``email-logs``),
    ``email.sent`` events to ``events_topic`` (default KAFKA_EVENTS_TOPIC)."""
    from etrans.app.sendmail import EmailDelivery

    return EmailDelivery(credentials=stores.credentials, marks=stores.marks, transport=pool,
                         events=publisher, log_topic=log_topic(kafka),
                         policy=delivery_policy(options), signing=signing, tracking=tracking,
                         events_topic=events_topic or kafka.events_topic, metrics=metrics)


def fetchlog_task(options: FetchlogOptions, writer: LogDocumentWriter, *,
                  usend: Database | None, statuses: EmailStatusStore | None,
                  suppressions: SuppressionStore | None,
                  reporter: ErrorSink | None = None, events: EventPublisher | None = None,
                  events_topic: str = "email-events") -> FetchlogTask:
    """Stores the events STORE_EVENT_TYPES names; email statuses, message owners and the
    suppression lists' hard bounces in the USEND DB when there is one, and then the email
    events of API emails on ``events_topic`` (through ``events``)."""
    from etrans.adapters.sql.message_owners import MessageOwnerLookup
    from etrans.domain.delivery_log import EventFilter
    from etrans.workers.fetchlog import FetchlogTask

    return FetchlogTask(
        EventFilter.from_settings(options.store_event_types, options.skip_message_id_pattern),
        writer, statuses, reporter,
        MessageOwnerLookup(usend) if usend is not None else None, suppressions,
        events=events, events_topic=events_topic, tracer=process_tracer())
