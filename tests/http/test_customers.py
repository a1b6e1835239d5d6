"""§3 customers: defaults, every field rule, uniqueness, PATCH, delete vs
archive, paging — through real HTTP."""

from decimal import Decimal

import pytest

from tests.http.helpers import (assert_error, assert_validation, create_customer, create_meter,
                                list_all, post_event, post_raw, table_count)


def count(server):
    return table_count(server, "customers")


def test_create_with_defaults(server, admin):
    reply = admin.post("/v1/customers", {"name": "Acme Corp", "email": "billing@acme.example"})
    assert reply.status == 201, reply
    c = reply.json
    assert isinstance(c["id"], int)
    assert c["name"] == "Acme Corp" and c["email"] == "billing@acme.example"
    assert c["external_id"] is None
    assert c["timezone"] == "UTC"
    assert c["currency"] == "USD"
    assert c["tax_rate"] == "0"
    assert c["net_terms_days"] == 30
    assert c["requires_approval"] is False
    assert c["budget"] is None
    assert c["metadata"] == {}
    assert c["archived"] is False
    assert c["created_at"].endswith("Z")
    assert admin.get(f"/v1/customers/{c['id']}").json == c


def test_create_with_every_field(server, admin):
    body = {"name": "Globex", "email": "ap@globex.example", "external_id": "cus_42",
            "timezone": "Europe/Berlin", "currency": "EUR", "billing_email": "invoices@globex.example",
            "billing_address": "1 Main St\n10115 Berlin", "tax_rate": "19", "net_terms_days": 14,
            "requires_approval": True, "csm_user_id": 1,
            "budget": {"monthly": "500.00", "alert_at_percent": [50, 80, 100]},
            "storage_quota_bytes": 10 ** 12, "contract_start": "2025-01-01", "contract_end": "2026-01-01",
            "metadata": {"segment": "enterprise", "seats": 12}}
    reply = admin.post("/v1/customers", body)
    assert reply.status == 201, reply
    c = reply.json
    for name, value in body.items():
        assert c[name] == value, name
    assert admin.get(f"/v1/customers/{c['id']}").json == c


@pytest.mark.parametrize("currency,monthly", [("JPY", "5000"), ("KWD", "1.502"), ("USD", "12.5")])
def test_budget_follows_currency_minor_digits(server, admin, currency, monthly):
    reply = admin.post("/v1/customers", {"name": "B", "email": "b@example.com", "currency": currency,
                                         "budget": {"monthly": monthly}})
    assert reply.status == 201, reply
    assert reply.json["budget"]["monthly"] == monthly


BAD_FIELDS = [
    ({"email": "a@example.com"}, "name"),
    ({"name": "", "email": "a@example.com"}, "name"),
    ({"name": "   ", "email": "a@example.com"}, "name"),
    ({"name": None, "email": "a@example.com"}, "name"),
    ({"name": 42, "email": "a@example.com"}, "name"),
    ({"name": "A"}, "email"),
    ({"name": "A", "email": None}, "email"),
    ({"name": "A", "email": "not-an-email"}, "email"),
    ({"name": "A", "email": "a@nodot"}, "email"),
    ({"name": "A", "email": "@example.com"}, "email"),
    ({"name": "A", "email": "a b@example.com"}, "email"),
    ({"name": "A", "email": ["a@example.com"]}, "email"),
    ({"name": "A", "email": "a@example.com", "timezone": "Mars/Olympus_Mons"}, "timezone"),
    ({"name": "A", "email": "a@example.com", "timezone": ""}, "timezone"),
    ({"name": "A", "email": "a@example.com", "timezone": "../../etc/passwd"}, "timezone"),
    ({"name": "A", "email": "a@example.com", "timezone": 2}, "timezone"),
    ({"name": "A", "email": "a@example.com", "timezone": None}, "timezone"),
    ({"name": "A", "email": "a@example.com", "currency": "XYZ"}, "currency"),
    ({"name": "A", "email": "a@example.com", "currency": "DOLLARS"}, "currency"),
    ({"name": "A", "email": "a@example.com", "currency": 840}, "currency"),
    ({"name": "A", "email": "a@example.com", "currency": None}, "currency"),
    ({"name": "A", "email": "a@example.com", "tax_rate": "abc"}, "tax_rate"),
    ({"name": "A", "email": "a@example.com", "tax_rate": "-1"}, "tax_rate"),
    ({"name": "A", "email": "a@example.com", "tax_rate": "101"}, "tax_rate"),
    ({"name": "A", "email": "a@example.com", "tax_rate": "1.1234567"}, "tax_rate"),
    ({"name": "A", "email": "a@example.com", "tax_rate": "1e2"}, "tax_rate"),
    ({"name": "A", "email": "a@example.com", "tax_rate": 18}, "tax_rate"),
    ({"name": "A", "email": "a@example.com", "tax_rate": None}, "tax_rate"),
    ({"name": "A", "email": "a@example.com", "net_terms_days": -1}, "net_terms_days"),
    ({"name": "A", "email": "a@example.com", "net_terms_days": "30"}, "net_terms_days"),
    ({"name": "A", "email": "a@example.com", "net_terms_days": 1.5}, "net_terms_days"),
    ({"name": "A", "email": "a@example.com", "net_terms_days": True}, "net_terms_days"),
    ({"name": "A", "email": "a@example.com", "net_terms_days": None}, "net_terms_days"),
    ({"name": "A", "email": "a@example.com", "net_terms_days": 100000}, "net_terms_days"),
    ({"name": "A", "email": "a@example.com", "budget": "500"}, "budget"),
    ({"name": "A", "email": "a@example.com", "budget": []}, "budget"),
    ({"name": "A", "email": "a@example.com", "budget": {}}, "budget"),
    ({"name": "A", "email": "a@example.com", "budget": {"monthly": "abc"}}, "budget"),
    ({"name": "A", "email": "a@example.com", "budget": {"monthly": "-5.00"}}, "budget"),
    ({"name": "A", "email": "a@example.com", "budget": {"monthly": "0"}}, "budget"),
    ({"name": "A", "email": "a@example.com", "budget": {"monthly": "1.234"}}, "budget"),
    ({"name": "A", "email": "a@example.com", "budget": {"monthly": 500}}, "budget"),
    ({"name": "A", "email": "a@example.com", "currency": "JPY", "budget": {"monthly": "500.5"}}, "budget"),
    ({"name": "A", "email": "a@example.com", "budget": {"monthly": "5", "alert_at_percent": "50"}}, "budget"),
    ({"name": "A", "email": "a@example.com", "budget": {"monthly": "5", "alert_at_percent": []}}, "budget"),
    ({"name": "A", "email": "a@example.com", "budget": {"monthly": "5", "alert_at_percent": [0]}}, "budget"),
    ({"name": "A", "email": "a@example.com", "budget": {"monthly": "5", "alert_at_percent": [True]}}, "budget"),
    ({"name": "A", "email": "a@example.com", "budget": {"monthly": "5", "weekly": "1"}}, "budget"),
    ({"name": "A", "email": "a@example.com", "csm_user_id": 999999}, "csm_user_id"),
    ({"name": "A", "email": "a@example.com", "csm_user_id": "1"}, "csm_user_id"),
    ({"name": "A", "email": "a@example.com", "csm_user_id": 0}, "csm_user_id"),
    ({"name": "A", "email": "a@example.com", "csm_user_id": True}, "csm_user_id"),
    ({"name": "A", "email": "a@example.com", "csm_user_id": 10 ** 30}, "csm_user_id"),
    ({"name": "A", "email": "a@example.com", "nickname": "ace"}, "nickname"),
    ({"name": "A", "email": "a@example.com", "id": 5}, "id"),
    ({"name": "A", "email": "a@example.com", "archived": True, "created_at": "x"}, "created_at"),
    ({"name": "A", "email": "a@example.com", "external_id": 7}, "external_id"),
    ({"name": "A", "email": "a@example.com", "billing_email": "nope"}, "billing_email"),
    ({"name": "A", "email": "a@example.com", "billing_address": ["x"]}, "billing_address"),
    ({"name": "A", "email": "a@example.com", "requires_approval": "yes"}, "requires_approval"),
    ({"name": "A", "email": "a@example.com", "storage_quota_bytes": -1}, "storage_quota_bytes"),
    ({"name": "A", "email": "a@example.com", "storage_quota_bytes": "10"}, "storage_quota_bytes"),
    ({"name": "A", "email": "a@example.com", "contract_start": "2025-02-30"}, "contract_start"),
    ({"name": "A", "email": "a@example.com", "contract_end": "next year"}, "contract_end"),
    ({"name": "A", "email": "a@example.com", "metadata": ["x"]}, "metadata"),
    ({"name": "A", "email": "a@example.com", "metadata": "x"}, "metadata"),
    ({"name": "A", "email": "a@example.com", "metadata": {"blob": "x" * 5000}}, "metadata"),
]


@pytest.mark.parametrize("body,field", BAD_FIELDS, ids=[f"{i}-{f}" for i, (_, f) in enumerate(BAD_FIELDS)])
def test_create_rejects_bad_field(server, admin, body, field):
    reply = admin.post("/v1/customers", body)
    assert_validation(reply, field)
    assert count(server) == 0
    assert admin.get("/v1/customers").json["data"] == []


def test_metadata_keeps_any_json_number(server, admin):
    reply = post_raw(admin, "/v1/customers", '{"name": "A", "email": "a@example.com", '
                                             '"metadata": {"big": 1e30, "small": 0.5, "n": 3}}')
    assert reply.status == 201, reply
    got = admin.get(f"/v1/customers/{reply.json['id']}").json["metadata"]
    assert got["big"] == Decimal("1e30") and got["small"] == Decimal("0.5") and got["n"] == 3


def test_all_bad_fields_reported_at_once(server, admin):
    reply = admin.post("/v1/customers", {"email": "nope", "timezone": "Nowhere/City", "currency": "ZZZ",
                                         "tax_rate": "x", "net_terms_days": -5, "color": "red"})
    assert_validation(reply, "name", "email", "timezone", "currency", "tax_rate", "net_terms_days", "color")
    for detail in reply.json["error"]["details"]:
        assert isinstance(detail["message"], str) and detail["message"]
    assert count(server) == 0


def test_body_must_be_an_object(server, admin):
    reply = admin.post("/v1/customers", [{"name": "A", "email": "a@example.com"}])
    assert reply.status == 400 and reply.error_code == "validation_error", reply
    assert count(server) == 0


@pytest.mark.parametrize("second", ["dup@example.com", "DUP@Example.COM", "  dup@example.com  "])
def test_duplicate_email_is_409(server, admin, second):
    create_customer(admin, email="dup@example.com")
    reply = admin.post("/v1/customers", {"name": "Two", "email": second})
    assert_error(reply, 409, "conflict")
    assert count(server) == 1


def test_duplicate_external_id_is_409(server, admin):
    create_customer(admin, external_id="ext-1")
    reply = admin.post("/v1/customers", {"name": "Two", "email": "two@example.com", "external_id": "ext-1"})
    assert_error(reply, 409, "conflict")
    assert count(server) == 1
    # several customers without an external_id are fine
    create_customer(admin)
    create_customer(admin)
    assert count(server) == 3


def test_patch_updates_fields(server, admin):
    c = create_customer(admin, name="Old", external_id="e1")
    reply = admin.patch(f"/v1/customers/{c['id']}", {"name": "New", "timezone": "America/New_York",
                                                     "currency": "JPY", "tax_rate": "7.25",
                                                     "net_terms_days": 0, "metadata": {"k": "v"},
                                                     "budget": {"monthly": "1000"}})
    assert reply.status == 200, reply
    after = reply.json
    assert after["name"] == "New" and after["timezone"] == "America/New_York"
    assert after["currency"] == "JPY" and after["tax_rate"] == "7.25" and after["net_terms_days"] == 0
    assert after["metadata"] == {"k": "v"} and after["budget"]["monthly"] == "1000"
    assert after["email"] == c["email"] and after["external_id"] == "e1"  # untouched
    assert admin.get(f"/v1/customers/{c['id']}").json == after
    cleared = admin.patch(f"/v1/customers/{c['id']}", {"budget": None, "external_id": None})
    assert cleared.status == 200 and cleared.json["budget"] is None and cleared.json["external_id"] is None


@pytest.mark.parametrize("body,field", [
    ({"name": ""}, "name"), ({"email": "bad"}, "email"), ({"timezone": "X/Y"}, "timezone"),
    ({"currency": "ABC"}, "currency"), ({"tax_rate": "200"}, "tax_rate"),
    ({"net_terms_days": -3}, "net_terms_days"), ({"budget": {"monthly": "x"}}, "budget"),
    ({"csm_user_id": 424242}, "csm_user_id"), ({"csm_user_id": 10 ** 30}, "csm_user_id"),
    ({"flavour": "x"}, "flavour"),
    ({"archived": "yes"}, "archived"), ({"id": 99}, "id"),
])
def test_patch_rejects_bad_field_and_changes_nothing(server, admin, body, field):
    c = create_customer(admin)
    assert_validation(admin.patch(f"/v1/customers/{c['id']}", body), field)
    assert admin.get(f"/v1/customers/{c['id']}").json == c


def test_patch_currency_recheck_of_stored_budget(server, admin):
    c = create_customer(admin, budget={"monthly": "10.50"})
    reply = admin.patch(f"/v1/customers/{c['id']}", {"currency": "JPY"})
    assert_validation(reply, "budget")
    assert admin.get(f"/v1/customers/{c['id']}").json["currency"] == "USD"


def test_patch_to_duplicate_email_or_external_id_is_409(server, admin):
    a = create_customer(admin, email="a@example.com", external_id="ea")
    b = create_customer(admin, email="b@example.com", external_id="eb")
    assert_error(admin.patch(f"/v1/customers/{b['id']}", {"email": "A@example.com"}), 409, "conflict")
    assert_error(admin.patch(f"/v1/customers/{b['id']}", {"external_id": "ea"}), 409, "conflict")
    assert admin.get(f"/v1/customers/{b['id']}").json == b
    assert admin.get(f"/v1/customers/{a['id']}").json == a


def test_unknown_customer_is_404(server, admin):
    for reply in (admin.get("/v1/customers/424242"), admin.patch("/v1/customers/424242", {"name": "x"}),
                  admin.delete("/v1/customers/424242"), admin.get("/v1/customers/424242/usage"),
                  admin.get("/v1/customers/99999999999999999999999"),
                  admin.get("/v1/customers/abc")):
        assert_error(reply, 404, "not_found")


def test_delete_without_references(server, admin):
    c = create_customer(admin)
    keep = create_customer(admin)
    reply = admin.delete(f"/v1/customers/{c['id']}")
    assert reply.status == 200, reply
    assert_error(admin.get(f"/v1/customers/{c['id']}"), 404, "not_found")
    assert [x["id"] for x in list_all(admin, "/v1/customers")] == [keep["id"]]
    # its email is free again
    create_customer(admin, email=c["email"])


def test_delete_with_events_is_409_archive_instead(server, admin):
    c = create_customer(admin)
    create_meter(admin)
    assert post_event(admin, id="e1", customer_id=c["id"], meter="api_calls").status == 201
    reply = admin.delete(f"/v1/customers/{c['id']}")
    assert_error(reply, 409, "conflict")
    assert admin.get(f"/v1/customers/{c['id']}").json == c

    archived = admin.patch(f"/v1/customers/{c['id']}", {"archived": True})
    assert archived.status == 200, archived
    assert archived.json["archived"] is True
    assert admin.get(f"/v1/customers/{c['id']}").json["archived"] is True
    assert [x["id"] for x in admin.get("/v1/customers?archived=true").json["data"]] == [c["id"]]
    assert admin.get("/v1/customers?archived=false").json["data"] == []

    # archived customers accept no new events, neither singly nor in batches
    reply = post_event(admin, id="e2", customer_id=c["id"], meter="api_calls")
    assert_validation(reply, "customer_id")
    reply = admin.post("/v1/events/batch", {"events": [{"id": "e3", "customer_id": c["id"], "meter": "api_calls"}]})
    assert reply.status == 400, reply
    assert [e["id"] for e in admin.get(f"/v1/events?customer_id={c['id']}").json["data"]] == ["e1"]

    # and un-archiving restores ingest
    assert admin.patch(f"/v1/customers/{c['id']}", {"archived": False}).status == 200
    assert post_event(admin, id="e4", customer_id=c["id"], meter="api_calls").status == 201


def test_customer_changes_are_audited(server, admin):
    c = create_customer(admin, name="Before")
    admin.patch(f"/v1/customers/{c['id']}", {"name": "After"})
    admin.delete(f"/v1/customers/{c['id']}")
    log = admin.get(f"/v1/audit-log?entity=customer&entity_id={c['id']}").json["data"]
    assert [e["action"] for e in log] == ["customer.delete", "customer.update", "customer.create"]
    update = log[1]
    assert update["before"]["name"] == "Before" and update["after"]["name"] == "After"
    assert update["actor"] and update["at"] and update["request_id"]
    assert log[0]["after"] is None and log[2]["before"] is None


def test_list_paging(server, admin):
    ids = [create_customer(admin)["id"] for _ in range(7)]
    seen, cursor, pages = [], None, 0
    while True:
        url = "/v1/customers?limit=3" + (f"&cursor={cursor}" if cursor else "")
        reply = admin.get(url)
        assert reply.status == 200, reply
        assert set(reply.json) == {"data", "next_cursor"}
        assert len(reply.json["data"]) <= 3
        seen += [c["id"] for c in reply.json["data"]]
        cursor = reply.json["next_cursor"]
        pages += 1
        if cursor is None:
            break
    assert seen == ids  # stable order, no gaps, no repeats
    assert pages == 3
    one = admin.get("/v1/customers?limit=1")
    assert len(one.json["data"]) == 1 and one.json["next_cursor"]
    exact = admin.get("/v1/customers?limit=7")
    assert len(exact.json["data"]) == 7 and exact.json["next_cursor"] is None
    assert len(admin.get("/v1/customers?limit=1000").json["data"]) == 7


def test_list_default_limit_is_50(server, admin):
    for _ in range(51):
        create_customer(admin)
    reply = admin.get("/v1/customers")
    assert len(reply.json["data"]) == 50 and reply.json["next_cursor"]
    rest = admin.get(f"/v1/customers?cursor={reply.json['next_cursor']}")
    assert len(rest.json["data"]) == 1 and rest.json["next_cursor"] is None


@pytest.mark.parametrize("query,field", [("limit=0", "limit"), ("limit=1001", "limit"), ("limit=-1", "limit"),
                                         ("limit=abc", "limit"), ("cursor=%%%", "cursor"),
                                         ("cursor=bm90LWpzb24", "cursor")])
def test_list_bad_paging_is_400(server, admin, query, field):
    create_customer(admin)
    assert_validation(admin.get(f"/v1/customers?{query}"), field)


def test_list_filters(server, admin):
    a = create_customer(admin, name="Alpha Widgets", email="alpha@example.com", external_id="x-a")
    b = create_customer(admin, name="Beta", email="beta@example.com")
    assert [c["id"] for c in admin.get("/v1/customers?email=alpha@example.com").json["data"]] == [a["id"]]
    assert [c["id"] for c in admin.get("/v1/customers?external_id=x-a").json["data"]] == [a["id"]]
    assert [c["id"] for c in admin.get("/v1/customers?q=widg").json["data"]] == [a["id"]]
    assert [c["id"] for c in admin.get("/v1/customers?q=beta").json["data"]] == [b["id"]]
    assert admin.get("/v1/customers?q=%25").json["data"] == []  # LIKE wildcards are literal



NOT_ONE_ADDRESS = [
    "a@example.com,b@example.com", "a@example.com, b@example.com", "a@example.com;b@example.com",
    "a,b@example.com", "Ann <a@example.com>", "<a@example.com>", '"a b"@example.com', "a@example.com b@example.com",
    "a@example.com\r\nBcc: c@example.com", "a@example.com\nbcc:c@example.com", "a@example.com\r\n",
    "\na@example.com", "a@example.com\t", "a@@example.com", "a@b@example.com", "a@example..com", "a@-example.com",
    "a@example", ".a@example.com", "a..b@example.com", "a@exam_ple.com", "a@example.com\x00",
    "a" * 65 + "@example.com", "a@" + "b" * 250 + ".com", "a@" + "b" * 64 + ".com", 7, ["a@example.com"],
]


@pytest.mark.parametrize("value", NOT_ONE_ADDRESS, ids=range(len(NOT_ONE_ADDRESS)))
def test_billing_email_is_exactly_one_address(server, admin, value):
    assert_validation(admin.post("/v1/customers", {"name": "A", "email": "a@example.com", "billing_email": value}),
                      "billing_email")
    assert count(server) == 0
    if isinstance(value, str):  # the customer's own e-mail is a recipient too
        assert_validation(admin.post("/v1/customers", {"name": "B", "email": value}), "email")
        assert count(server) == 0
    c = create_customer(admin, billing_email="ap@example.com")
    assert_validation(admin.patch(f"/v1/customers/{c['id']}", {"billing_email": value}), "billing_email")
    assert admin.get(f"/v1/customers/{c['id']}").json == c


@pytest.mark.parametrize("value", ["ap+billing@example.co.uk", "o'brien@example.com", "AP@sub-domain.example",
                                   "x" * 64 + "@example.com", "ops@localhost", "ap@exämple.de"])
def test_billing_email_accepts_one_plain_address(server, admin, value):
    c = create_customer(admin, billing_email=value)
    assert c["billing_email"] == value
    assert admin.patch(f"/v1/customers/{c['id']}", {"billing_email": None}).json["billing_email"] is None
