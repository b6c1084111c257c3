"""A client generated from ``/openapi.json`` with openapi-python-client, as a new user would
(``openapi-python-client generate``), calls EVERY operation of a real ``etrans serve`` (local
billing, the loopback DNS server for domain verification, the testing routes on):

- each answer parses into its typed model (an ``attrs`` class of the generated ``models``, never
  a bare dict or None), and
- each answer's JSON validates against the schema the document declares for its status
  (jsonschema-rs, formats checked, ``additionalProperties: false``), so the document cannot
  drift from what the routes really answer;
- every secured operation, called again without a credential, answers its declared 401.

The client is generated once, into tmp_path, from the document the server serves.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import pytest
from sqlalchemy.orm import Session

from etrans.adapters.sql import make_engine
from etrans.adapters.sql.usend import LocalUser
from tests.e2e.send_support import JWT_SECRET, ServeProcess, bearer

PACKAGE = "etrans_client"


@pytest.fixture
def serve(etrans_env: Any, dns_server: Any):
    env = etrans_env(JWT_SECRET=JWT_SECRET, BILLING_V4_URI=None,
                     DNS_NAMESERVERS=dns_server.address, ETRANS_ENABLE_TESTING_ROUTES="true",
                     WEBHOOKS_ALLOW_PRIVATE_URLS="true",
                     ETRANS_REDIS_PREFIX=f"oc:{uuid.uuid4().hex[:10]}:",
                     DEFAULT_SPF_VALUE="v=spf1 include:_spf.e2e.test ~all",
                     DEFAULT_MX_HOST="mx.e2e.test", ETRANS_LOG_LEVEL="WARNING")
    process = ServeProcess(env).start()
    yield process
    process.stop()


def _generate(document: dict[str, Any], where: Path) -> Any:
    """``openapi-python-client generate`` into ``where``, then the imported package.  No post
    hooks: they would run ruff on the generated code, which changes nothing that is tested."""
    (where / "openapi.json").write_text(json.dumps(document))
    (where / "config.yaml").write_text("post_hooks: []\n")
    result = subprocess.run(
        [str(Path(sys.executable).parent / "openapi-python-client"), "generate",
         "--path", str(where / "openapi.json"), "--meta", "none", "--config",
         str(where / "config.yaml"), "--output-path", str(where / PACKAGE)],
        capture_output=True, text=True, timeout=120, cwd=where)
    report = result.stdout + result.stderr
    assert result.returncode == 0, report
    assert "Warning" not in report, report  # a part of the document it could not turn into code
    sys.path.insert(0, str(where))
    return importlib.import_module(PACKAGE)


class Calls:
    """Calls operations through the generated client and checks every answer."""

    def __init__(self, document: dict[str, Any], client: Any, anonymous: Any) -> None:
        self.document = document
        self.client = client
        self.anonymous = anonymous
        self.operations = {op["operationId"]: op for methods in document["paths"].values()
                           for op in methods.values()}
        self.called: dict[str, tuple[Any, dict[str, Any]]] = {}

    def __call__(self, module: Any, status: int, **arguments: Any) -> Any:
        operation_id = module.__name__.rsplit(".", 1)[1]
        response = module.sync_detailed(client=self.client, **arguments)
        assert response.status_code == status, (operation_id, response.content)
        self.check(operation_id, response)
        self.called.setdefault(operation_id, (module, arguments))
        return response.parsed

    def check(self, operation_id: str, response: Any) -> None:
        declared = self.operations[operation_id]["responses"]
        code = str(int(response.status_code))
        assert code in declared, (operation_id, code, "not declared")
        if code == "204":
            assert response.content == b""
            return
        schema = declared[code]["content"]["application/json"]["schema"]
        answer = json.loads(response.content)
        validator = jsonschema_rs.Draft202012Validator(
            {**schema, "components": self.document["components"]}, validate_formats=True)
        errors = [f"{error.instance_path}: {error.message}"
                  for error in validator.iter_errors(answer)]
        assert errors == [], (operation_id, code, answer)
        parsed = response.parsed
        models = sys.modules[f"{PACKAGE}.models"]
        assert type(parsed).__name__ in models.__all__, (operation_id, code, type(parsed))

    def unauthenticated(self) -> list[str]:
        """Every secured operation again, without a credential: 401, parsed as Error."""
        checked = []
        for operation_id, (module, arguments) in self.called.items():
            if "security" not in self.operations[operation_id]:
                continue
            response = module.sync_detailed(client=self.anonymous, **arguments)
            assert response.status_code == 401, (operation_id, response.content)
            self.check(operation_id, response)
            assert type(response.parsed).__name__ == "Error"
            checked.append(operation_id)
        return checked


def _publish(dns_server: Any, name: str, records: list[Any]) -> None:
    spf, mx, dkim = records
    dns_server.set_records(name, "TXT", [f'"{spf.value}"'])
    dns_server.set_records(name, "MX", [f"{mx.priority} {mx.value}."])
    value = dkim.value
    dns_server.set_records(f"{dkim.name}.{name}", "TXT",
                           [" ".join(f'"{value[i:i + 200]}"' for i in range(0, len(value), 200))])


def test_a_generated_client_calls_every_operation_typed(serve: ServeProcess, dns_server: Any,
                                                        tmp_path: Path):
    document = httpx.get(serve.base_url + "/openapi.json", timeout=30).json()
    client_package = _generate(document, tmp_path)
    api = importlib.import_module(f"{PACKAGE}.api")
    m = importlib.import_module(f"{PACKAGE}.models")

    def op(tag: str, name: str) -> Any:
        return importlib.import_module(f"{api.__name__}.{tag}.{name}")

    user = int(uuid.uuid4().int % 2**40) + 10**7
    token = bearer(user)["Authorization"].removeprefix("Bearer ")
    client = client_package.AuthenticatedClient(base_url=serve.base_url, token=token,
                                                timeout=httpx.Timeout(30))
    anonymous = client_package.Client(base_url=serve.base_url, timeout=httpx.Timeout(30))
    call = Calls(document, client, anonymous)

    health = call(op("health", "healthz"), 200)
    assert health.status.value == "ok"

    # Domains: create, verify (records published on the loopback DNS server), read, change.
    name = f"d{uuid.uuid4().hex[:12]}.example"
    created = call(op("domains", "create_domain"), 200,
                   body=m.CreateDomainRequest(domain=name))
    assert isinstance(created, m.DomainCreated)
    _publish(dns_server, name, created.dns_records)
    verified = call(op("domains", "verify_domain"), 200, domain_id=created.id)
    assert verified.status == "verified"
    call(op("domains", "get_domain"), 200, domain_id=created.id)
    call(op("domains", "list_domains"), 200)
    call(op("domains", "update_domain_tracking"), 200, domain_id=created.id,
         body=m.UpdateDomainTrackingRequest(open_tracking=True))

    # Sending: a sender for the domain, one email, a batch, the lists.
    call(op("senders", "create_sender"), 200,
         body=m.CreateSenderRequest(account=f"hello@{name}", domain=name,
                                    password="e2e-password"))
    email = m.SendEmailRequest(from_=f"Hello <hello@{name}>", to=["someone@example.org"],
                               subject="hi", text="hello")
    sent = call(op("emails", "send_email"), 200, body=email)
    call(op("emails", "send_batch"), 200, body=m.SendBatchRequest(emails=[email]))
    call(op("emails", "list_emails"), 200)
    call(op("emails", "get_email"), 200, message_id=sent.id)
    # A scheduled email: sent later, moved, cancelled (typed times both ways).
    soon = datetime.now(UTC) + timedelta(hours=1)
    scheduled = call(op("emails", "send_email"), 200, body=m.SendEmailRequest(
        from_=f"hello@{name}", to=["someone@example.org"], subject="later", text="later",
        scheduled_at=soon))
    assert (scheduled.status, scheduled.scheduled_at) == ("scheduled", soon.replace(microsecond=0))
    moved = call(op("emails", "reschedule_email"), 200, message_id=scheduled.id,
                 body=m.MoveScheduleRequest(scheduled_at=soon + timedelta(hours=1)))
    assert moved.scheduled_at == (soon + timedelta(hours=1)).replace(microsecond=0)
    assert call(op("emails", "cancel_schedule"), 200, message_id=scheduled.id).status == (
        "Cancelled")
    call(op("logs", "list_logs"), 200)
    call(op("domains", "get_domain_quota"), 200, domain_id=created.id)

    # API keys.
    key = call(op("api_keys", "create_api_key"), 200,
               body=m.CreateApiKeyRequest(name="client", expires_in_days=30))
    call(op("api_keys", "list_api_keys"), 200)
    call(op("api_keys", "get_api_key"), 200, key_id=key.id)

    # Suppressions.
    call(op("suppressions", "add_suppression"), 201,
         body=m.AddSuppressionRequest(email="gone@example.org"))
    call(op("suppressions", "list_suppressions"), 200)

    # Templates: stored, read, changed, previewed, sent by id.
    template = call(op("templates", "create_template"), 201,
                    body=m.CreateTemplateRequest(name="welcome", subject="Hi {{ name }}",
                                                 text="Hello {{ name }}"))
    call(op("templates", "list_templates"), 200)
    call(op("templates", "get_template"), 200, template_id=template.id)
    call(op("templates", "update_template"), 200, template_id=template.id,
         body=m.UpdateTemplateRequest(html="<p>Hello {{ name }}</p>"))
    data = m.RenderTemplateRequestTemplateDataType0.from_dict({"name": "Ada"})
    preview = call(op("templates", "render_template"), 200, template_id=template.id,
                   body=m.RenderTemplateRequest(template_data=data))
    assert preview.subject == "Hi Ada"
    by_template = call(op("emails", "send_email"), 200, body=m.SendEmailRequest(
        from_=f"hello@{name}", to=["someone@example.org"], template_id=template.id,
        template_data=m.SendEmailRequestTemplateDataType0.from_dict({"name": "Ada"})))
    assert call(op("emails", "get_email"), 200, message_id=by_template.id).subject == "Hi Ada"

    # Webhooks (private URLs allowed by this server's settings).
    hook = call(op("webhooks", "create_webhook"), 201,
                body=m.CreateWebhookRequest(url="https://127.0.0.1:9/hooks"))
    call(op("webhooks", "list_webhooks"), 200)
    call(op("webhooks", "get_webhook"), 200, webhook_id=hook.id)
    call(op("webhooks", "update_webhook"), 200, webhook_id=hook.id,
         body=m.UpdateWebhookRequest(description="typed"))
    call(op("webhooks", "list_webhook_deliveries"), 200, webhook_id=hook.id)

    # Billing (local mode): the user owns a balance for the subscription.
    engine = make_engine(serve.env["USEND_DB_URI"])
    with Session(engine) as session, session.begin():
        session.merge(LocalUser(id=user, email=f"{user}@x.example", balance=Decimal(600000),
                                is_owner=True))
    engine.dispose()
    domain_number = int(created.id.removeprefix("dom_"))
    call(op("billing", "list_packs"), 200)
    call(op("billing", "current_pack"), 200)
    call(op("billing", "create_subscription"), 200,
         body=m.CreateSubscriptionRequest(pack_code="DEDICATED_100K", domain_id=domain_number))
    second = call(op("domains", "create_domain"), 200,
                  body=m.CreateDomainRequest(domain=f"p{uuid.uuid4().hex[:12]}.example"))
    second_number = int(second.id.removeprefix("dom_"))
    call(op("billing", "payg_package"), 200)
    call(op("billing", "create_payg_subscription"), 200,
         body=m.CreatePaygRequest(domain_id=second_number))
    call(op("billing", "get_payg_subscription"), 200, domain_id=second_number)
    call(op("billing", "cancel_payg_subscription"), 200, domain_id=second_number)
    call(op("testing", "set_pack"), 200, body=m.SetPackRequest(pack_code="DEDICATED_100K"))

    # Every secured operation without a credential: 401, before the deletes below.
    unauthenticated = call.unauthenticated()
    assert len(unauthenticated) == len(call.called) - 1  # all but /healthz

    # The deletes, last.
    call(op("suppressions", "remove_suppression"), 204, address="gone@example.org")
    call(op("webhooks", "delete_webhook"), 204, webhook_id=hook.id)
    call(op("templates", "delete_template"), 204, template_id=template.id)
    call(op("api_keys", "delete_api_key"), 200, key_id=key.id)
    call(op("domains", "delete_domain"), 200, domain_id=second.id)
    deleted = call(op("domains", "delete_domain"), 200, domain_id=created.id)
    assert isinstance(deleted, m.Deleted)
    assert deleted.deleted is True
    # ... and an error answer of a path parameter: declared, and parsed as Error.
    gone = op("domains", "get_domain").sync_detailed(client=client, domain_id=created.id)
    assert gone.status_code == 404
    call.check("get_domain", gone)

    assert set(call.called) == set(call.operations), "operations the test does not call"
