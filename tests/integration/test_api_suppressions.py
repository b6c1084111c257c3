"""/suppressions against PostgreSQL and Redis (the account API of ``account_api``): add (201 new,
200 listed already), list (paged, filtered, newest first), remove (204, 404), normalisation,
permissions as the other account resources, tenant isolation, and hostile input (400, never
5xx)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from etrans.adapters.sql.suppressions_repo import PgSuppressionStore
from etrans.app.records import Suppression
from tests.integration.account_api import api, new_user_id

__all__ = ["api"]


def _path(address: str) -> str:
    return "/suppressions/" + quote(address, safe="")


async def _add(api: Any, user: int, email: str, reason: str | None = None,
               expected: int = 201) -> dict[str, Any]:
    body = {"email": email} if reason is None else {"email": email, "reason": reason}
    status, entry = await api.call("POST", "/suppressions", user, json=body)
    assert status == expected, entry
    return dict(entry)


async def _list(api: Any, user: int, query: str = "") -> dict[str, Any]:
    status, page = await api.call("GET", f"/suppressions{query}", user)
    assert status == 200, page
    return dict(page)


async def test_add_list_and_remove_one_address(api: Any) -> None:
    user = new_user_id()
    entry = await _add(api, user, "  Bob.Smith+tag@Example.ORG ")
    assert entry.pop("created_at").endswith("Z")
    assert entry == {"email": "bob.smith+tag@example.org", "reason": "manual",
                     "message_id": None, "response": None}
    # Listed already (in any case): 200 with the entry that is there.
    again = await _add(api, user, "BOB.SMITH+TAG@example.org", "complaint", expected=200)
    assert (again["email"], again["reason"]) == ("bob.smith+tag@example.org", "manual")
    page = await _list(api, user)
    assert (page["total"], page["page"], page["per_page"]) == (1, 1, 20)
    assert page["data"] == [{**entry, "created_at": again["created_at"]}]

    status, body = await api.call("DELETE", _path("Bob.Smith+Tag@example.org"), user)
    assert (status, body) == (204, None)
    status, body = await api.call("DELETE", _path("bob.smith+tag@example.org"), user)
    assert status == 404
    assert "not on the suppression list" in body["detail"]
    assert (await _list(api, user))["total"] == 0
    assert (await _add(api, user, "bob.smith+tag@example.org", "complaint"))["reason"] == \
        "complaint"


async def test_any_address_the_api_takes_can_be_removed_again(api: Any) -> None:
    user = new_user_id()
    odd = ["a/b@mail.example", "100%@mail.example", "x?y#z@mail.example", "o'neil@mail.example",
           "{a}|~&=@mail.example"]
    for address in odd:
        await _add(api, user, address)
    assert (await _list(api, user))["total"] == len(odd)
    for address in odd:
        status, body = await api.call("DELETE", _path(address.upper()), user)
        assert status == 204, (address, body)
    assert (await _list(api, user))["total"] == 0


async def test_list_filters_pages_and_shows_why(api: Any) -> None:
    user = new_user_id()
    at = datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    store = PgSuppressionStore(api.usend)
    await store.add([
        Suppression(user, "gone@mail.example", "hard_bounce", "msg_1@shop.example",
                    "550 5.1.1 user unknown", at),
        Suppression(user, "abuse@mail.example", "complaint", created_at=at + timedelta(hours=1)),
        Suppression(user, "me@other.example", "manual", created_at=at + timedelta(hours=2)),
    ])
    page = await _list(api, user)
    assert [e["email"] for e in page["data"]] == [
        "me@other.example", "abuse@mail.example", "gone@mail.example"]
    assert page["data"][2] == {"email": "gone@mail.example", "reason": "hard_bounce",
                               "message_id": "msg_1@shop.example",
                               "response": "550 5.1.1 user unknown",
                               "created_at": "2026-05-01T12:00:00.123456Z"}
    by = {query: [e["email"] for e in (await _list(api, user, query))["data"]] for query in (
        "?reason=hard_bounce", "?address=MAIL.example", "?address=", "?per_page=1&page=2",
        "?created_at_from=2026-05-01T13:00:00.123456Z",
        "?created_at_to=2026-05-01T13:00:00Z&created_at_from=2026-05-01",
        "?created_at_from=2026-05-01T15:00:00%2B02:00&created_at_to=2026-05-01T13:30:00Z")}
    assert by == {
        "?reason=hard_bounce": ["gone@mail.example"],
        "?address=MAIL.example": ["abuse@mail.example", "gone@mail.example"],
        "?address=": ["me@other.example", "abuse@mail.example", "gone@mail.example"],
        "?per_page=1&page=2": ["abuse@mail.example"],
        "?created_at_from=2026-05-01T13:00:00.123456Z": ["me@other.example",
                                                         "abuse@mail.example"],
        "?created_at_to=2026-05-01T13:00:00Z&created_at_from=2026-05-01": ["gone@mail.example"],
        "?created_at_from=2026-05-01T15:00:00%2B02:00&created_at_to=2026-05-01T13:30:00Z":
            ["abuse@mail.example"],
    }
    assert (await _list(api, user, "?reason=complaint&per_page=1"))["total"] == 1
    assert (await _list(api, user, "?page=5"))["data"] == []


async def test_each_user_has_their_own_list(api: Any) -> None:
    alice, bob = new_user_id(), new_user_id()
    await _add(api, alice, "shared@mail.example", "complaint")
    assert (await _list(api, bob))["total"] == 0
    assert (await _list(api, bob, "?address=shared"))["data"] == []
    assert (await api.call("DELETE", _path("shared@mail.example"), bob))[0] == 404
    assert (await _add(api, bob, "shared@mail.example"))["reason"] == "manual"  # 201: Bob's own
    assert (await api.call("DELETE", _path("shared@mail.example"), bob))[0] == 204
    alices = await _list(api, alice)
    assert [(e["email"], e["reason"]) for e in alices["data"]] == [
        ("shared@mail.example", "complaint")]


async def test_read_only_and_sending_access_read_full_access_writes(api: Any) -> None:
    user = new_user_id()
    keys = {}
    for level in ("read_only", "sending_access", "full_access"):
        status, created = await api.call("POST", "/api-keys", user,
                                         json={"name": level, "permission": level})
        assert status == 200, created
        keys[level] = {"X-API-KEY": created["key"]}
    await _add(api, user, "listed@mail.example")
    for level in ("read_only", "sending_access"):
        assert (await api.call("GET", "/suppressions", keys[level]))[0] == 200
        status, body = await api.call("POST", "/suppressions", keys[level],
                                      json={"email": "x@mail.example"})
        assert status == 403, body
        assert (await api.call("DELETE", _path("listed@mail.example"), keys[level]))[0] == 403
    full = keys["full_access"]
    assert (await api.call("POST", "/suppressions", full, json={"email": "x@mail.example"}))[0] \
        == 201
    assert (await api.call("DELETE", _path("listed@mail.example"), full))[0] == 204
    for method, path in (("GET", "/suppressions"), ("POST", "/suppressions"),
                         ("DELETE", _path("x@mail.example"))):
        assert (await api.call(method, path, {}))[0] == 401
    assert (await _list(api, user))["total"] == 1


async def test_hostile_input_is_a_clear_400(api: Any) -> None:
    user = new_user_id()
    long_local = "a" * 64
    bodies = [
        {"email": "a" * 310 + "@example.org"},  # 322 characters
        {"email": long_local + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 63 + ".org"},
        {"email": "nul\x00@example.org"}, {"email": "tab\t@example.org"},
        {"email": "line\r\nBcc: x@y.org"}, {"email": "lone\ud9dc@example.org"},
        {"email": "not-an-address"}, {"email": "Bob <bob@example.org>"}, {"email": ""},
        {"email": 7}, {"email": None}, {}, {"email": "ok@example.org", "reason": "bogus"},
        {"email": "ok@example.org", "reason": "hard_bounce"},
        {"email": "ok@example.org", "extra": 1}, ["ok@example.org"],
    ]
    for body in bodies:
        status, answer = await api.call("POST", "/suppressions", user, json=body)
        assert status == 400, (body, status, answer)
        assert answer["detail"], body
    queries = ["?page=0", "?page=-1", "?page=x", "?per_page=0", "?per_page=101",
               "?per_page=99999999999999999999", "?reason=bogus", "?reason=",
               "?created_at_from=yesterday", "?created_at_to=2026-13-01",
               "?created_at_from=2026-05-02&created_at_to=2026-05-01",
               "?created_at_from=0001-01-01T00:00:00%2B01:00", "?address=%00",
               "?address=" + "a" * 321]
    for query in queries:
        status, answer = await api.call("GET", f"/suppressions{query}", user)
        assert status == 400, (query, status, answer)
    for address in ("a" * 321, "nul\x00@example.org", "tab\t@example.org"):
        status, answer = await api.call("DELETE", _path(address), user)
        assert status == 400, (address, status, answer)
    assert (await _list(api, user))["total"] == 0


async def test_the_openapi_document_describes_the_routes(api: Any) -> None:
    spec = await (await api.client.get("/openapi.json")).get_json()
    listing, entry = spec["paths"]["/suppressions"], spec["paths"]["/suppressions/{address}"]
    assert set(listing) == {"get", "post"}
    assert set(entry) == {"delete"}
    assert {"200", "400", "401", "403"} <= set(listing["get"]["responses"])
    assert {"201", "200", "400", "403"} <= set(listing["post"]["responses"])
    assert {"204", "400", "403", "404"} <= set(entry["delete"]["responses"])
    assert "content" not in entry["delete"]["responses"]["204"]
    assert [p["name"] for p in entry["delete"]["parameters"]] == ["address"]
    assert (listing["get"]["x-permission"], listing["post"]["x-permission"],
            entry["delete"]["x-permission"]) == ("read_only", "full_access", "full_access")
    assert {"Suppression", "SuppressionList", "AddSuppressionRequest"} <= set(
        spec["components"]["schemas"])
