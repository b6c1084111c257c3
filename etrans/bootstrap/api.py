"""The HTTP API's wiring, shared by ``serve`` and ``dev``: authentication, the message bus of the
email and log use cases, the account services, the outbox relay and the Quart app.

Both subcommands hand :func:`create_api` the same typed inputs (:class:`ApiSections` from their
settings, :class:`ApiBackends` from :mod:`etrans.bootstrap.stores`), so the API they serve is
wired one way.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from etrans.bootstrap.tracing import process_tracer

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from quart_trio import QuartTrio

    from etrans.adapters.http.billing_gateway import HttpBillingGateway
    from etrans.adapters.sql import Database
    from etrans.adapters.sql.domains_repo import SqlDomains
    from etrans.adapters.sql.outbox import OutboxRelay
    from etrans.adapters.sql.outbox_store import OutboxStore
    from etrans.adapters.sql.sending_domains import DomainDirectory
    from etrans.api.auth import Authenticator
    from etrans.api.rate_limit import RateLimiter
    from etrans.api.routing import ApiServices
    from etrans.app.accounts import AccountDeps
    from etrans.app.bus import MessageBus
    from etrans.app.metrics import HttpMetrics
    from etrans.app.ports import BatchPublisher, EventPublisher, HealthProbe, RateCounter
    from etrans.app.template_ports import TemplateSource
    from etrans.app.templates import TemplateDeps
    from etrans.app.tracking_hits import TrackingHits
    from etrans.app.webhooks import WebhookDeps
    from etrans.bootstrap.stores import ApiStores
    from etrans.settings import HttpSettings, KafkaSettings, OutboxSettings, TokenSettings
    from etrans.settings.tracking import TrackingSettings


@dataclass(frozen=True)
class ApiSections:
    """The settings the API is wired from (``dev`` fills in its tokens and local topics)."""

    http: HttpSettings
    tokens: TokenSettings
    kafka: KafkaSettings
    outbox: OutboxSettings
    tracking: TrackingSettings | None = None  # ETRANS_TRACKING_BASE_URL unset: no /t/ routes


@dataclass(frozen=True)
class ApiBackends:
    """What the API runs on.  ``billing_db`` is the external Billing DB, None in the local
    billing mode (BILLING_V4_URI unset: the ``local_*`` tables of the USEND DB)."""

    usend_db: Database
    stores: ApiStores
    billing_db: Database | None = None
    relay: OutboxRelay | None = None  # publishes what requests committed
    # Produces the tracking endpoints' events (KAFKA_EVENTS_TOPIC); None: no /t/ routes.
    events: BatchPublisher | None = None


def rate_limiter(http: HttpSettings, counter: RateCounter | None) -> RateLimiter | None:
    """The API's request rate limits (etrans.api.rate_limit), or None without a counter store."""
    import ipaddress

    from etrans.api.rate_limit import RateLimiter, RateLimitPolicy

    if counter is None:
        return None
    return RateLimiter(counter, RateLimitPolicy(
        requests=http.rate_limit_requests,
        anonymous_requests=http.rate_limit_anonymous_requests,
        window_seconds=http.rate_limit_window_seconds,
        trusted_proxies=tuple(ipaddress.ip_network(n, strict=False)
                              for n in http.rate_limit_trusted_proxies)))


def authenticator(http: HttpSettings, stores: ApiStores) -> Authenticator:
    """API keys (cached), bearer tokens verified locally (JWT_SECRET / JWT_PUBLIC_KEY) and the
    session cookie through MANAGE_AUTH_URI."""
    from etrans.adapters.http.auth_gateway import HttpAuthGateway
    from etrans.api.auth import ApiKeyResolver, Authenticator, JwtVerifier

    jwt = None
    if http.jwt_secret is not None or http.jwt_public_key is not None:
        jwt = JwtVerifier(
            secret=http.jwt_secret.get() if http.jwt_secret is not None else None,
            public_key=(http.jwt_public_key.get()
                        if http.jwt_secret is None and http.jwt_public_key is not None else None),
            audience=http.jwt_audience, issuer=http.jwt_issuer,
            leeway_seconds=http.jwt_leeway_seconds)
    gateway = (HttpAuthGateway(http.manage_auth_uri, cookie_name=http.session_cookie_name)
               if http.manage_auth_uri else None)
    return Authenticator(ApiKeyResolver(stores.usend_repo, stores.key_cache), jwt=jwt,
                         gateway=gateway, session_cookie=http.session_cookie_name,
                         allowed_origins=http.allowed_origins)


def _billing_domains(sections: ApiSections, backends: ApiBackends) -> SqlDomains:
    """The domains in the billing-shaped tables: the Billing DB (read only) when BILLING_V4_URI
    is set, else etrans's ``local_*`` tables in the USEND DB."""
    from etrans.adapters.sql.domains_repo import BillingTables, SqlDomains

    if sections.http.billing_v4_uri and backends.billing_db is not None:
        return SqlDomains(backends.billing_db, BillingTables.external())
    return SqlDomains(backends.usend_db, BillingTables.local())


def sending_bus(sections: ApiSections, backends: ApiBackends
                ) -> tuple[MessageBus, DomainDirectory]:
    """The bus with the email and log use cases, and the sending-domain cache they read.

    SMTP credentials come from the user's sender (``transport``), else from the billing system's
    ``temporary_password`` (external billing only); domains and ``mkt_domain`` from the Billing DB,
    or from the ``local_*`` tables of the USEND DB when BILLING_V4_URI is unset (local billing).
    """
    from etrans.adapters.crypto.credentials import CredentialCipher
    from etrans.adapters.sql.issued_credentials import IssuedCredentialReader
    from etrans.adapters.sql.schedules_repo import SqlSchedules
    from etrans.adapters.sql.sending_domains import CredentialDirectory, DomainDirectory
    from etrans.adapters.sql.subscriptions_repo import SqlSubscriptions
    from etrans.app import emails as email_cases
    from etrans.app import logs as log_cases
    from etrans.app import schedules as schedule_cases
    from etrans.app import templates as template_cases
    from etrans.app.bus import MessageBus

    stores, tokens, kafka = backends.stores, sections.tokens, sections.kafka
    billing_db = backends.billing_db if sections.http.billing_v4_uri else None
    issued = IssuedCredentialReader(billing_db or backends.usend_db, local=billing_db is None)
    domains = DomainDirectory(_billing_domains(sections, backends),
                              SqlSubscriptions(backends.usend_db))
    cipher = CredentialCipher(tokens.secret.get(), tokens.iv.get())
    bus = MessageBus()
    templates = template_deps(backends.usend_db, source=stores.usend_repo)
    template_cases.register(bus, templates)
    email_cases.register(bus, email_cases.EmailDeps(
        domains=domains, credentials=CredentialDirectory(stores.usend_repo, issued, cipher),
        credential_cache=stores.credential_cache, quota=stores.quota, store=stores.usend_repo,
        suppressions=stores.usend_repo, outbox=backends.relay,
        topic=kafka.topic, max_record_bytes=kafka.max_record_bytes,
        events_topic=kafka.events_topic, templates=templates,
        # Both stores (PostgreSQL, dev's SQLite) check the recipients as they insert.
        guarded_saves=True,
    ))
    log_cases.register(bus, log_cases.LogDeps(stores.log_reader, stores.usend_repo, domains))
    schedule_cases.register(bus, schedule_cases.ScheduleDeps(SqlSchedules(backends.usend_db)))
    return bus, domains


def template_deps(usend: Database, *, source: TemplateSource | None = None) -> TemplateDeps:
    """Templates in the USEND DB, checked and rendered by the sandboxed Jinja engine; a send
    reads its template from ``source`` (the send path's connection) when given."""
    from etrans.adapters.jinja.engine import JinjaTemplateEngine
    from etrans.adapters.sql.templates_repo import SqlTemplates
    from etrans.app.templates import TemplateDeps

    return TemplateDeps(store=SqlTemplates(usend), engine=JinjaTemplateEngine(), source=source)


def http_billing_gateway(http: HttpSettings) -> HttpBillingGateway:
    """BILLING_V4_URI with its token (``Authorization: Bearer BILLING_V4_TOKEN``)."""
    from etrans.adapters.http.billing_gateway import HttpBillingGateway

    assert http.billing_v4_uri, "only called in the http billing mode"
    return HttpBillingGateway(
        http.billing_v4_uri,
        api_token=http.billing_v4_token.get() if http.billing_v4_token else None)


def account_deps(sections: ApiSections, backends: ApiBackends,
                 sending_domains: DomainDirectory) -> AccountDeps:
    """What the account use cases (domains, API keys, senders, billing) depend on.

    Billing mode: ``http`` (BILLING_V4_URI set; domains read from the read-only Billing DB) or
    ``local`` (etrans's ``local_*`` tables in the USEND DB).  The quota counters and the API key
    cache are the sending use cases' objects, so GET /domains/{id}/quota reads the counters
    POST /emails increments and DELETE /api-keys revokes the entries authentication reads.
    """
    from etrans.adapters.crypto.credentials import CredentialCipher
    from etrans.adapters.crypto.dkim_keys import DkimKeyCipher, RsaDkimKeys
    from etrans.adapters.dns.verify import DnsVerifier
    from etrans.adapters.sql.api_keys_repo import SqlApiKeys
    from etrans.adapters.sql.billing_events import BillingEventOutbox
    from etrans.adapters.sql.billing_local import LocalBillingGateway
    from etrans.adapters.sql.domain_settings_repo import SqlDomainSettings
    from etrans.adapters.sql.packs_repo import SqlPackCatalogue
    from etrans.adapters.sql.senders_repo import SqlSenders
    from etrans.adapters.sql.subscriptions_repo import SqlSubscriptions
    from etrans.app.accounts import AccountDeps
    from etrans.domain.domains import DnsTemplate

    http, stores, usend = sections.http, backends.stores, backends.usend_db
    secret = sections.tokens.secret.get()
    billing: Any = (http_billing_gateway(http) if http.billing_v4_uri
                    else LocalBillingGateway(usend, DkimKeyCipher(secret)))
    return AccountDeps(
        domains=_billing_domains(sections, backends),
        packs=SqlPackCatalogue(usend),
        subscriptions=SqlSubscriptions(usend, BillingEventOutbox(sections.kafka.billing_topic)),
        domain_settings=SqlDomainSettings(usend),
        api_keys=SqlApiKeys(usend),
        senders=SqlSenders(usend),
        billing=billing,
        verifier=DnsVerifier(spf_value=http.default_spf_value, mx_host=http.default_mx_host,
                             nameservers=http.dns_nameservers),
        dkim_keys=RsaDkimKeys(),
        sealer=CredentialCipher(secret, sections.tokens.iv.get()),
        template=DnsTemplate(spf_value=http.default_spf_value, mx_host=http.default_mx_host,
                             mx_priority=http.default_mx_priority),
        quota=stores.quota, api_key_cache=stores.key_cache,
        credential_cache=stores.credential_cache, sending_domains=sending_domains,
        outbox=backends.relay,
    )


def webhook_deps(sections: ApiSections, usend: Database) -> WebhookDeps:
    """Webhook endpoints in the USEND DB, secrets sealed under TOKEN_SECRET, URLs resolved with
    DNS_NAMESERVERS and checked unless WEBHOOKS_ALLOW_PRIVATE_URLS."""
    from etrans.adapters.crypto.webhook_secrets import WebhookSecretCipher
    from etrans.adapters.dns.addresses import DnsHostResolver
    from etrans.adapters.sql.webhooks_repo import SqlWebhooks
    from etrans.app.webhooks import WebhookDeps

    http = sections.http
    return WebhookDeps(store=SqlWebhooks(usend),
                       sealer=WebhookSecretCipher(sections.tokens.secret.get()),
                       resolver=DnsHostResolver(nameservers=http.dns_nameservers),
                       allow_private_urls=http.webhooks_allow_private_urls)


def api_services(sections: ApiSections, backends: ApiBackends) -> ApiServices:
    """Everything the routes use, complete: one bus with every use case registered."""
    from etrans.api.routing import ApiServices
    from etrans.app import accounts, webhooks
    from etrans.app import suppressions as suppression_cases
    from etrans.bootstrap.stores import suppression_store

    bus, domains = sending_bus(sections, backends)
    accounts.register(bus, account_deps(sections, backends, domains))
    suppression_cases.register(bus, suppression_cases.SuppressionDeps(
        suppression_store(backends.usend_db)))
    webhooks.register(bus, webhook_deps(sections, backends.usend_db))
    return ApiServices(bus=bus, idempotency=backends.stores.idempotency,
                       testing_routes=sections.http.enable_testing_routes)


def tracking_hits(sections: ApiSections, backends: ApiBackends) -> TrackingHits | None:
    """The tracking endpoints' token check and event queue (None: tracking off, or nothing
    to produce the events with)."""
    from etrans.app.tracking_hits import TrackingHits
    from etrans.domain.tracking import derive_tracking_key

    tracking = sections.tracking
    if tracking is None or backends.events is None:
        return None
    return TrackingHits(derive_tracking_key(tracking.secret.get().encode()), backends.events,
                        tracking.events_topic, queue_size=tracking.queue_size)


def unavailable_errors() -> tuple[type[BaseException], ...]:
    """The drivers' errors of a database that cannot answer (connection refused or lost, a
    database closed to connections, the pool's wait run out, MongoDB unreachable): the API
    answers them 503 with Retry-After where an adapter let one through (docs/api.md)."""
    import psycopg
    import pymongo.errors
    import sqlalchemy.exc

    return (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError,
            sqlalchemy.exc.TimeoutError, psycopg.OperationalError, psycopg.InterfaceError,
            pymongo.errors.ConnectionFailure)


def create_api(sections: ApiSections, backends: ApiBackends, *,
               probes: Sequence[HealthProbe], metrics: HttpMetrics | None = None,
               metrics_page: Callable[[], Awaitable[tuple[bytes, str]]] | None = None
               ) -> QuartTrio:
    """The Quart app of ``serve`` and ``dev``; ``metrics``: requests counted and timed,
    ``metrics_page``: GET /metrics (etrans.api.metrics)."""
    from etrans.api.app import ApiDependencies, create_app

    http = sections.http
    return create_app(ApiDependencies(
        probes=probes, authenticator=authenticator(http, backends.stores),
        services=api_services(sections, backends),
        rate_limiter=rate_limiter(http, backends.stores.rate_counter),
        body_memory_bytes=http.body_memory_bytes,
        tracking=tracking_hits(sections, backends), metrics=metrics, metrics_page=metrics_page,
        tracer=process_tracer(), unavailable=unavailable_errors()))


def outbox_relay(kafka: KafkaSettings, outbox: OutboxSettings, store: OutboxStore,
                 publisher: EventPublisher, events_topic: str | None = None) -> OutboxRelay:
    """The outbox relay of ``serve`` and ``dev`` on ``store`` (PostgreSQL or SQLite): a row that
    can never be published fails its email and queues Reject events for LOG_TOPIC (default
    ``email-logs``, as sendmail); ``email.queued`` / ``email.failed`` go to ``events_topic``
    (default KAFKA_EVENTS_TOPIC)."""
    from etrans.adapters.sql.outbox import OutboxRelay
    from etrans.bootstrap.configs import log_topic
    from etrans.workers.reject_events import outbox_agent, reject_events

    return OutboxRelay(store, publisher, max_attempts=outbox.max_attempts,
                       retention_seconds=outbox.retention_hours * 3600.0,
                       log_topic=log_topic(kafka),
                       reject_events=partial(reject_events, agent=outbox_agent()),
                       events_topic=events_topic or kafka.events_topic,
                       tracer=process_tracer())
