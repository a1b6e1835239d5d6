"""Resources (§6): CRUD, validation, unique names, deletion rules, lowered
capacity, and who may do what (§9)."""

from functools import partial

import pytest

from tests.harness import make_key
from tests.http import helpers
from tests.http.helpers import assert_error, assert_validation, make_customer, pin, start, table_count, unique

ROOM = {"name": "Room A", "description": "Big room", "capacity": 3, "price_per_minute": "0.50",
        "currency": "USD", "max_duration_minutes": 120}
make_resource = partial(helpers.make_resource, template=ROOM)  # the resources here start as ROOM


@pytest.fixture(autouse=True)
def _clock():
    pin("2025-09-15T09:00:00Z")


def test_create_read_list(admin):
    reply = admin.post("/v1/resources", ROOM)
    assert reply.status == 201, reply
    room = reply.json
    assert {k: room[k] for k in ROOM} == ROOM
    assert (room["active"], room["available"]) == (0, 3)
    assert isinstance(room["id"], int) and room["created_at"] == "2025-09-15T09:00:00Z"
    assert admin.get(f"/v1/resources/{room['id']}").json == room
    # defaults: no description, no maximum duration; USD when no currency is given
    desk = admin.post("/v1/resources", {"name": "Desk", "capacity": 1, "price_per_minute": "0"})
    assert desk.status == 201, desk
    assert (desk.json["description"], desk.json["max_duration_minutes"], desk.json["currency"],
            desk.json["price_per_minute"]) == (None, None, "USD", "0")
    listed = admin.get("/v1/resources").json
    assert [r["id"] for r in listed["data"]] == [room["id"], desk.json["id"]] and listed["next_cursor"] is None
    first = admin.get("/v1/resources?limit=1").json
    assert [r["id"] for r in first["data"]] == [room["id"]]
    rest = admin.get(f"/v1/resources?limit=1&cursor={first['next_cursor']}").json
    assert [r["id"] for r in rest["data"]] == [desk.json["id"]] and rest["next_cursor"] is None
    assert_error(admin.get("/v1/resources/999999"), 404, "not_found")


BAD_BODIES = [
    ({"capacity": 0}, "capacity"),
    ({"capacity": -2}, "capacity"),
    ({"capacity": 1.5}, "capacity"),
    ({"capacity": "2"}, "capacity"),
    ({"capacity": True}, "capacity"),
    ({"capacity": None}, "capacity"),
    ({"price_per_minute": 0.5}, "price_per_minute"),
    ({"price_per_minute": "-0.01"}, "price_per_minute"),
    ({"price_per_minute": "abc"}, "price_per_minute"),
    ({"price_per_minute": "1e3"}, "price_per_minute"),
    ({"price_per_minute": "NaN"}, "price_per_minute"),
    ({"price_per_minute": ""}, "price_per_minute"),
    ({"price_per_minute": None}, "price_per_minute"),
    ({"currency": "XXY"}, "currency"),
    ({"currency": "usd"}, "currency"),
    ({"currency": 840}, "currency"),
    ({"max_duration_minutes": 0}, "max_duration_minutes"),
    ({"max_duration_minutes": 2.5}, "max_duration_minutes"),
    ({"max_duration_minutes": "60"}, "max_duration_minutes"),
    ({"name": ""}, "name"),
    ({"name": "   "}, "name"),
    ({"name": 7}, "name"),
    ({"name": None}, "name"),
    ({"name": "x" * 201}, "name"),
    ({"description": 5}, "description"),
    ({"colour": "blue"}, "colour"),
]


@pytest.mark.parametrize("change,field", BAD_BODIES, ids=[f"{f}={c.get(f)!r}"[:40] for c, f in BAD_BODIES])
def test_create_validation_stores_nothing(server, admin, change, field):
    reply = admin.post("/v1/resources", {**ROOM, **change})
    assert_validation(reply, field)
    assert table_count(server, "resources") == 0


@pytest.mark.parametrize("missing", ["name", "capacity", "price_per_minute"])
def test_required_fields(server, admin, missing):
    body = {k: v for k, v in ROOM.items() if k != missing}
    assert_validation(admin.post("/v1/resources", body), missing)
    assert table_count(server, "resources") == 0


def test_every_bad_field_is_reported_at_once(admin):
    reply = admin.post("/v1/resources", {"name": "", "capacity": 0, "price_per_minute": "x", "currency": "ZZZ",
                                         "max_duration_minutes": 0, "extra": 1})
    assert_validation(reply, "name", "capacity", "price_per_minute", "currency", "max_duration_minutes", "extra")


def test_names_are_unique_case_insensitively(server, admin):
    room = make_resource(admin, name="Room A")
    for name in ("Room A", "room a", "ROOM A", "  room A  "):
        reply = admin.post("/v1/resources", {**ROOM, "name": name})
        assert_error(reply, 409, "conflict")
    assert table_count(server, "resources") == 1
    other = make_resource(admin, name="Room B")
    # renaming onto a taken name is refused too, and changes nothing
    assert_error(admin.patch(f"/v1/resources/{other['id']}", {"name": "ROOM a", "capacity": 9}), 409, "conflict")
    assert_error(admin.put(f"/v1/resources/{other['id']}", {**ROOM, "name": "room A"}), 409, "conflict")
    assert admin.get(f"/v1/resources/{other['id']}").json == other
    # its own name in another case is fine
    renamed = admin.patch(f"/v1/resources/{room['id']}", {"name": "ROOM A"})
    assert renamed.status == 200 and renamed.json["name"] == "ROOM A"


def test_patch_changes_only_the_given_fields_and_put_replaces(server, admin):
    room = make_resource(admin)
    pin("2025-09-15T10:00:00Z")
    reply = admin.patch(f"/v1/resources/{room['id']}", {"capacity": 8, "price_per_minute": "0.75"})
    assert reply.status == 200, reply
    patched = reply.json
    assert (patched["capacity"], patched["price_per_minute"], patched["available"]) == (8, "0.75", 8)
    assert {k: patched[k] for k in ("name", "description", "currency", "max_duration_minutes")} == \
        {k: room[k] for k in ("name", "description", "currency", "max_duration_minutes")}
    assert patched["updated_at"] == "2025-09-15T10:00:00Z" and patched["created_at"] == room["created_at"]
    # PUT: every field given; what is left out is cleared (optional) or refused (required)
    assert_validation(admin.put(f"/v1/resources/{room['id']}", {"name": "Only a name"}), "capacity",
                      "price_per_minute")
    replaced = admin.put(f"/v1/resources/{room['id']}", {"name": "Lab", "capacity": 2, "price_per_minute": "1.25",
                                                         "currency": "EUR"})
    assert replaced.status == 200, replaced
    assert {k: replaced.json[k] for k in ROOM} == {"name": "Lab", "description": None, "capacity": 2,
                                                   "price_per_minute": "1.25", "currency": "EUR",
                                                   "max_duration_minutes": None}
    # a bad PATCH changes nothing
    before = admin.get(f"/v1/resources/{room['id']}").json
    for bad in ({"capacity": 0}, {"price_per_minute": "-1"}, {"currency": "EURO"}, {"unknown": 1},
                {"max_duration_minutes": 0}, {"name": None}, {"capacity": 5, "price_per_minute": 1}):
        assert admin.patch(f"/v1/resources/{room['id']}", bad).status == 400, bad
    assert admin.get(f"/v1/resources/{room['id']}").json == before
    # clearing the optional maximum with null
    limited = admin.patch(f"/v1/resources/{room['id']}", {"max_duration_minutes": 30}).json
    assert limited["max_duration_minutes"] == 30
    assert admin.patch(f"/v1/resources/{room['id']}", {"max_duration_minutes": None}).json[
        "max_duration_minutes"] is None
    for method in ("PATCH", "PUT", "DELETE"):
        body = ROOM if method != "DELETE" else None
        assert_error(admin.request(method, "/v1/resources/999999", body), 404, "not_found")


def test_currency_cannot_change_once_it_has_sessions(admin):
    room = make_resource(admin)
    cid = make_customer(admin)
    assert admin.patch(f"/v1/resources/{room['id']}", {"currency": "EUR"}).status == 200  # no sessions yet
    assert admin.patch(f"/v1/resources/{room['id']}", {"currency": "USD"}).status == 200
    assert start(admin, room["id"], cid).status == 201
    assert_error(admin.patch(f"/v1/resources/{room['id']}", {"currency": "EUR"}), 409, "conflict")
    assert admin.get(f"/v1/resources/{room['id']}").json["currency"] == "USD"


def test_delete_refused_while_active_then_records_stay_and_name_is_free(server, admin):
    room = make_resource(admin, name="Studio", price_per_minute="1.00")
    cid = make_customer(admin)
    session = start(admin, room["id"], cid).json
    refused = admin.delete(f"/v1/resources/{room['id']}")
    assert_error(refused, 409, "conflict")
    assert admin.get(f"/v1/resources/{room['id']}").status == 200
    pin("2025-09-15T09:10:00Z")
    stopped = admin.post(f"/v1/sessions/{session['id']}/stop", {})
    assert stopped.status == 200 and stopped.json["cost"] == "10.00"
    deleted = admin.delete(f"/v1/resources/{room['id']}")
    assert deleted.status == 200, deleted
    assert_error(admin.get(f"/v1/resources/{room['id']}"), 404, "not_found")
    assert room["id"] not in [r["id"] for r in admin.get("/v1/resources").json["data"]]
    assert_error(admin.delete(f"/v1/resources/{room['id']}"), 404, "not_found")
    assert_error(admin.patch(f"/v1/resources/{room['id']}", {"capacity": 2}), 404, "not_found")
    # no new session on a deleted resource
    assert_validation(start(admin, room["id"], cid), "resource_id")
    # its billing record stays
    records = admin.get(f"/v1/billing-records?resource_id={room['id']}").json
    assert [(r["id"], r["cost"], r["resource"]) for r in records["data"]] == [(session["id"], "10.00", "Studio")]
    assert records["totals"]["USD"]["amount"] == "10.00"
    assert admin.get(f"/v1/sessions/{session['id']}").json["cost"] == "10.00"
    # and the name is free again
    again = admin.post("/v1/resources", {**ROOM, "name": "studio"})
    assert again.status == 201 and again.json["id"] != room["id"]
    # a resource that never had a session is simply gone
    bare = make_resource(admin)
    assert admin.delete(f"/v1/resources/{bare['id']}").status == 200
    assert_error(admin.get(f"/v1/resources/{bare['id']}"), 404, "not_found")


def test_lowering_capacity_below_active_blocks_new_starts_until_it_drops(admin):
    room = make_resource(admin, capacity=3)
    cid = make_customer(admin)
    ids = [start(admin, room["id"], cid).json["id"] for _ in range(3)]
    lowered = admin.patch(f"/v1/resources/{room['id']}", {"capacity": 1})
    assert lowered.status == 200, lowered
    assert (lowered.json["capacity"], lowered.json["active"], lowered.json["available"]) == (1, 3, 0)
    full = start(admin, room["id"], cid)
    assert_error(full, 409, "capacity_full")
    assert (full.json["error"]["active"], full.json["error"]["capacity"]) == (3, 1)
    assert admin.post(f"/v1/sessions/{ids[0]}/stop", {}).status == 200
    assert_error(start(admin, room["id"], cid), 409, "capacity_full")  # 2 running, capacity 1
    assert admin.post(f"/v1/sessions/{ids[1]}/stop", {}).status == 200
    assert_error(start(admin, room["id"], cid), 409, "capacity_full")  # 1 running: still full
    assert admin.post(f"/v1/sessions/{ids[2]}/stop", {}).status == 200
    assert start(admin, room["id"], cid).status == 201
    assert admin.get(f"/v1/resources/{room['id']}").json["active"] == 1


def test_roles(server, admin):
    room = make_resource(admin)
    cid = make_customer(admin)
    for role in ("finance", None):  # None: the admin key
        client = server.client(make_key(server, role=role)) if role else admin
        made = client.post("/v1/resources", {**ROOM, "name": unique("R")})
        assert made.status == 201, (role, made)
        rid = made.json["id"]
        assert client.patch(f"/v1/resources/{rid}", {"capacity": 4}).status == 200
        assert client.put(f"/v1/resources/{rid}", {**ROOM, "name": unique("R")}).status == 200
        assert client.delete(f"/v1/resources/{rid}").status == 200
    readers = [server.client(make_key(server, role=r)) for r in ("viewer", "customer_success", "sales")]
    for client in readers:
        assert client.get("/v1/resources").status == 200
        assert client.get(f"/v1/resources/{room['id']}").json["name"] == room["name"]
        assert_error(client.post("/v1/resources", {**ROOM, "name": unique("R")}), 403, "forbidden")
        assert_error(client.patch(f"/v1/resources/{room['id']}", {"capacity": 9}), 403, "forbidden")
        assert_error(client.put(f"/v1/resources/{room['id']}", ROOM), 403, "forbidden")
        assert_error(client.delete(f"/v1/resources/{room['id']}"), 403, "forbidden")
    others = [server.client(make_key(server, role="ingest")), server.client(make_key(server, customer_id=cid))]
    for client in others:
        for method, body in (("GET", None), ("POST", ROOM)):
            assert_error(client.request(method, "/v1/resources", body), 403, "forbidden")
        assert_error(client.get(f"/v1/resources/{room['id']}"), 403, "forbidden")
        assert_error(client.delete(f"/v1/resources/{room['id']}"), 403, "forbidden")
    assert_error(server.client().get("/v1/resources"), 401, "unauthenticated")
    assert_error(server.client().post("/v1/resources", ROOM), 401, "unauthenticated")
    assert admin.get(f"/v1/resources/{room['id']}").json["capacity"] == room["capacity"]
    assert [r["id"] for r in admin.get("/v1/resources").json["data"]] == [room["id"]]
