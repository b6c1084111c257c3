"""The ``http`` billing gateway: the external billing API at BILLING_V4_URI.

The contract (paths, bodies, status codes) is ``docs/billing-gateway.md``.  Implements
:class:`etrans.app.ports.BillingGateway` with httpx on Trio.  Mapping of its answers:

- 2xx: done;
- 400/409/422 -> 400, 403 -> 403, 404 -> 404, each with the billing API's ``detail``;
- any other status (5xx, 401, unexpected) -> 502 "Billing service error";
- timeout or connection failure -> 503 "Billing service unavailable".

etrans writes nothing of its own before a billing call succeeds, so a failed call leaves no
partial state behind.

Credentials: ``api_token`` (BILLING_V4_TOKEN) goes in ``Authorization: Bearer``.  Settings refuse
a plain ``http://`` BILLING_V4_URI to a host other than loopback unless BILLING_V4_ALLOW_HTTP; even
then, ``create_domain`` (whose body carries the DKIM private key) refuses to call such a URL
(503, nothing sent): the private key only travels over TLS or within the machine.  Redirects are
not followed, so an https URL cannot be downgraded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx

from etrans.errors import Forbidden, InvalidInput, NotFound, UpstreamUnavailable
from etrans.observability import get_logger
from etrans.settings import is_loopback_host

if TYPE_CHECKING:
    from datetime import datetime

log = get_logger(__name__)


class BillingBadGateway(UpstreamUnavailable):
    """The billing API answered, but with an error of its own (5xx or an unexpected answer)."""

    status_code = 502


class HttpBillingGateway:
    mode = "http"

    def __init__(self, base_url: str, *, timeout_seconds: float = 10.0,
                 transport: httpx.AsyncBaseTransport | None = None,
                 api_token: str | None = None) -> None:
        headers = {"User-Agent": "etrans"}
        if api_token:
            headers["Authorization"] = f"Bearer {api_token}"
        self._client = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout_seconds,
                                         transport=transport, headers=headers,
                                         follow_redirects=False)
        url = httpx.URL(base_url)
        # Plain http that leaves the machine: no private key goes there.
        self._cleartext_remote = url.scheme == "http" and not is_loopback_host(url.host)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None,
                    params: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            response = await self._client.request(method, path, json=body, params=params)
        except httpx.TimeoutException:
            log.warning("billing api timeout", method=method, path=path)
            raise UpstreamUnavailable("Billing service unavailable: timeout") from None
        except httpx.TransportError as exc:
            log.warning("billing api unreachable", method=method, path=path,
                        error=type(exc).__name__)
            raise UpstreamUnavailable("Billing service unavailable") from None
        try:
            data = response.json() if response.content else {}
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        status = response.status_code
        if 200 <= status < 300:
            return data
        detail = data.get("detail") if isinstance(data.get("detail"), str) else None
        if status in (400, 409, 422):
            raise InvalidInput(detail or "Rejected by the billing service")
        if status == 403:
            raise Forbidden(detail or "Refused by the billing service")
        if status == 404:
            raise NotFound(detail or "Not found by the billing service")
        log.error("billing api error", method=method, path=path, status=status)
        raise BillingBadGateway(f"Billing service error (HTTP {status})")

    async def create_domain(self, *, user_id: int, name: str, dkim_selector: str,
                            dkim_public_key: str, dkim_private_key_pem: bytes,
                            max_domains: int | None = None) -> int:
        # ``max_domains`` is not sent: the billing system owns the domains and enforces the
        # pack's domain limit itself (docs/billing-gateway.md); etrans's check before this
        # call is only a quick refusal.
        if self._cleartext_remote:
            log.error("billing api over plain http: DKIM private key not sent",
                      path="/domains")
            raise UpstreamUnavailable("Billing service unavailable: BILLING_V4_URI is plain http,"
                                      " and the DKIM private key is only sent over https")
        data = await self._call("POST", "/domains", {
            "user_id": user_id, "domain": name,
            "dkim": {"selector": dkim_selector, "public_key": dkim_public_key,
                     "private_key_pem": dkim_private_key_pem.decode("ascii")},
        })
        domain_id = data.get("id")
        if not isinstance(domain_id, int) or isinstance(domain_id, bool) or domain_id <= 0:
            raise BillingBadGateway("Billing service error: no domain id in its answer")
        return domain_id

    async def delete_domain(self, *, user_id: int, domain_id: int) -> None:
        await self._call("DELETE", f"/domains/{domain_id}", params={"user_id": user_id})

    async def mark_domain_verified(self, *, user_id: int, domain_id: int,
                                   verified_at: datetime) -> None:
        await self._call("POST", f"/domains/{domain_id}/verified",
                         {"user_id": user_id, "verified_at": verified_at.isoformat()})

    async def create_subscription(self, *, user_id: int, domain_id: int, pack_code: str,
                                  pack_name: str, price: float) -> str | None:
        data = await self._call("POST", "/subscriptions", {
            "user_id": user_id, "domain_id": domain_id, "pack_code": pack_code})
        sub_id = data.get("id")
        return str(sub_id) if sub_id is not None else None

    async def create_payg_subscription(self, *, user_id: int, domain_id: int, pack_code: str,
                                       pack_name: str) -> str | None:
        data = await self._call("POST", "/payg/subscriptions", {
            "user_id": user_id, "domain_id": domain_id, "pack_code": pack_code})
        sub_id = data.get("id")
        return str(sub_id) if sub_id is not None else None

    async def cancel_payg_subscription(self, *, user_id: int, domain_id: int) -> None:
        await self._call("DELETE", f"/payg/subscriptions/{domain_id}",
                         params={"user_id": user_id})
