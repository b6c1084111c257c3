"""Use cases of webhook endpoints (POST/GET/PATCH/DELETE /webhooks, GET
/webhooks/{id}/deliveries): commands and queries on the :class:`~etrans.app.bus.MessageBus`.

A URL is checked when it is saved (created or changed): its syntax, then every address its host
resolves to must be public (:mod:`etrans.domain.webhook_urls`), unless ``allow_private_urls``
(WEBHOOKS_ALLOW_PRIVATE_URLS, local tests).  The signing secret is made here, sealed for storage
and shown once, in the answer of the creation.  Every query is within the user's endpoints.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from etrans.app.webhook_records import (
    DeliveryPage,
    NewWebhook,
    Webhook,
    WebhookChanges,
    WebhookPage,
)
from etrans.domain.webhook_urls import (
    InvalidWebhookUrl,
    address_problem,
    parse_webhook_url,
)
from etrans.domain.webhooks import (
    MAX_WEBHOOKS_PER_USER,
    InvalidSubscription,
    new_signing_secret,
    subscription,
)
from etrans.errors import InvalidInput, NotFound
from etrans.observability import get_logger

if TYPE_CHECKING:
    from etrans.app.bus import MessageBus
    from etrans.app.webhook_ports import HostResolver, WebhookSecretSealer, WebhookStore

log = get_logger(__name__)
NOT_FOUND = "Webhook not found"


@dataclass(frozen=True)
class WebhookDeps:
    store: WebhookStore
    sealer: WebhookSecretSealer
    resolver: HostResolver
    allow_private_urls: bool = False
    max_per_user: int = MAX_WEBHOOKS_PER_USER


@dataclass(frozen=True)
class CreateWebhook:
    """``events`` None: every event type."""

    user_id: int
    url: str
    events: tuple[str, ...] | None = None
    description: str | None = None


@dataclass(frozen=True)
class ListWebhooks:
    user_id: int
    page: int = 1
    per_page: int = 20


@dataclass(frozen=True)
class GetWebhook:
    user_id: int
    webhook_id: int


@dataclass(frozen=True)
class UpdateWebhook:
    """None = unchanged."""

    user_id: int
    webhook_id: int
    url: str | None = None
    events: tuple[str, ...] | None = None
    enabled: bool | None = None
    description: str | None = None


@dataclass(frozen=True)
class DeleteWebhook:
    user_id: int
    webhook_id: int


@dataclass(frozen=True)
class ListWebhookDeliveries:
    user_id: int
    webhook_id: int
    page: int = 1
    per_page: int = 20


async def checked_url(deps: WebhookDeps, url: str) -> str:
    """``url`` when a webhook may have it, else InvalidInput saying why."""
    try:
        parsed = parse_webhook_url(url, allow_http=deps.allow_private_urls)
        if parsed.ip is not None:
            addresses = [str(parsed.ip)]
        elif parsed.is_localhost:
            addresses = ["127.0.0.1", "::1"]
        else:
            addresses = await deps.resolver.addresses(parsed.host.removesuffix("."))
    except InvalidWebhookUrl as exc:
        raise InvalidInput(str(exc)) from None
    if not deps.allow_private_urls:
        problem = address_problem(parsed.host, addresses)
        if problem:
            raise InvalidInput(problem)
    return url


def _event_types(events: tuple[str, ...] | None) -> tuple[str, ...]:
    try:
        return subscription(events)
    except InvalidSubscription as exc:
        raise InvalidInput(str(exc)) from None


async def create_webhook(deps: WebhookDeps, cmd: CreateWebhook) -> NewWebhook:
    types = _event_types(cmd.events)
    url = await checked_url(deps, cmd.url)
    secret = new_signing_secret()
    row = await deps.store.create(cmd.user_id, url=url, description=cmd.description,
                                  event_types=types,
                                  secret_sealed=deps.sealer.seal(cmd.user_id, secret),
                                  max_per_user=deps.max_per_user)
    if row is None:
        raise InvalidInput(f"Webhook limit reached: at most {deps.max_per_user} webhooks "
                           "per account")
    log.info("webhook created", user_id=cmd.user_id, webhook_id=row.id)
    return NewWebhook(record=row, secret=secret)


async def list_webhooks(deps: WebhookDeps, cmd: ListWebhooks) -> WebhookPage:
    rows, total = await deps.store.page(cmd.user_id, page=cmd.page, per_page=cmd.per_page)
    return WebhookPage(rows, total, cmd.page, cmd.per_page)


async def get_webhook(deps: WebhookDeps, cmd: GetWebhook) -> Webhook:
    row = await deps.store.get(cmd.user_id, cmd.webhook_id)
    if row is None:
        raise NotFound(NOT_FOUND)
    return row


async def update_webhook(deps: WebhookDeps, cmd: UpdateWebhook) -> Webhook:
    types = _event_types(cmd.events) if cmd.events is not None else None
    if await deps.store.get(cmd.user_id, cmd.webhook_id) is None:
        raise NotFound(NOT_FOUND)  # before the URL's DNS lookup: another user's id costs none
    url = await checked_url(deps, cmd.url) if cmd.url is not None else None
    row = await deps.store.update(cmd.user_id, cmd.webhook_id, WebhookChanges(
        url=url, event_types=types, enabled=cmd.enabled, description=cmd.description))
    if row is None:
        raise NotFound(NOT_FOUND)
    log.info("webhook updated", user_id=cmd.user_id, webhook_id=row.id, enabled=row.enabled)
    return row


async def delete_webhook(deps: WebhookDeps, cmd: DeleteWebhook) -> None:
    if not await deps.store.delete(cmd.user_id, cmd.webhook_id):
        raise NotFound(NOT_FOUND)
    log.info("webhook deleted", user_id=cmd.user_id, webhook_id=cmd.webhook_id)


async def list_webhook_deliveries(deps: WebhookDeps, cmd: ListWebhookDeliveries
                                  ) -> DeliveryPage:
    found = await deps.store.deliveries(cmd.user_id, cmd.webhook_id, page=cmd.page,
                                        per_page=cmd.per_page)
    if found is None:
        raise NotFound(NOT_FOUND)
    rows, total = found
    return DeliveryPage(rows, total, cmd.page, cmd.per_page)


def register(bus: MessageBus, deps: WebhookDeps) -> None:
    bus.register(CreateWebhook, partial(create_webhook, deps))
    bus.register(ListWebhooks, partial(list_webhooks, deps))
    bus.register(GetWebhook, partial(get_webhook, deps))
    bus.register(UpdateWebhook, partial(update_webhook, deps))
    bus.register(DeleteWebhook, partial(delete_webhook, deps))
    bus.register(ListWebhookDeliveries, partial(list_webhook_deliveries, deps))
