"""`GET /metrics` (§10): valid Prometheus text, bounded labels, staff only
unless public, and no writes."""

import re

from tests.helpers import wait_for
from tests.harness import RunningServer, make_key, temp_db
from tests.http.helpers import WriteCounter, create_customer, create_meter

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (-?[0-9.e+-]+|\+Inf|NaN)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')


def parse(text):
    """{family: {"type", "help", "samples": [(name, {label: value}, value)]}}; every
    line must be a HELP, a TYPE or a sample of a declared family."""
    assert text.endswith("\n")
    families, current = {}, None
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            assert name not in families, f"HELP twice for {name}"
            families[name] = {"help": help_text, "type": None, "samples": []}
            current = name
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert name == current and families[name]["type"] is None, f"TYPE out of place: {line}"
            assert kind in ("counter", "gauge", "histogram")
            families[name]["type"] = kind
        else:
            match = SAMPLE.match(line)
            assert match, f"not a sample line: {line!r}"
            name, _, labels_text, value = match.groups()
            labels = {}
            if labels_text:
                consumed = 0
                for label in LABEL.finditer(labels_text):
                    assert label.start() == consumed, f"bad labels in {line!r}"
                    labels[label.group(1)] = label.group(2)
                    consumed = label.end()
                assert consumed == len(labels_text), f"bad labels in {line!r}"
            base = re.sub(r"_(bucket|sum|count)$", "", name) if families.get(current, {}).get("type") == "histogram" \
                else name
            assert base == current, f"sample {name} outside its family {current}"
            families[current]["samples"].append((name, labels, float(value.replace("+Inf", "inf"))))
    return families


def check_histogram(family, name):
    buckets = [(s[1]["le"], s[2]) for s in family["samples"] if s[0] == name + "_bucket"]
    assert buckets[-1][0] == "+Inf"
    counts = [c for _, c in buckets]
    assert counts == sorted(counts), "buckets are cumulative"
    count = [s[2] for s in family["samples"] if s[0] == name + "_count"][0]
    assert buckets[-1][1] == count


def test_metrics_are_valid_prometheus_text(server, admin):
    customer = create_customer(admin)
    create_meter(admin, key="api_calls")
    tenant = server.client(make_key(server, customer_id=customer["id"]))
    assert tenant.post("/v1/events", {"id": "e1", "meter": "api_calls"}).status == 201
    assert tenant.post("/v1/events", {"id": "e1", "meter": "api_calls"}).status == 200  # a duplicate
    assert admin.get(f"/v1/customers/{customer['id']}").status == 200
    assert admin.get("/v1/customers/424242").status == 404
    assert admin.get("/no/such/path").status == 404
    reply = admin.get("/metrics")
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    families = parse(reply.raw.decode("utf-8"))
    for name in ("meterline_http_requests_total", "meterline_http_request_duration_seconds",
                 "meterline_events_ingested_total", "meterline_events_duplicate_total", "meterline_invoices",
                 "meterline_webhook_deliveries_total", "meterline_writer_queue_depth",
                 "meterline_writer_transaction_seconds", "meterline_db_size_bytes",
                 "meterline_scheduler_last_success_timestamp_seconds", "process_resident_memory_bytes",
                 "meterline_event_id_filter_ready", "meterline_event_id_filter_bytes", "meterline_build_info"):
        assert name in families and families[name]["type"], name
    check_histogram(families["meterline_http_request_duration_seconds"], "meterline_http_request_duration_seconds")
    check_histogram(families["meterline_writer_transaction_seconds"], "meterline_writer_transaction_seconds")
    routes = {s[1]["route"] for s in families["meterline_http_requests_total"]["samples"]}
    assert "/v1/customers/{customer_id}" in routes and "(no route)" in routes
    assert not any("424242" in r or "/no/such" in r for r in routes)  # patterns, never raw paths
    assert families["meterline_events_ingested_total"]["samples"][0][2] == 1
    assert families["meterline_events_duplicate_total"]["samples"][0][2] == 1
    assert families["process_resident_memory_bytes"]["samples"][0][2] > 10 ** 6


def test_the_event_id_filter_is_built_when_events_come_and_shown(server, admin):
    """(server.py builds it at start; the test server, which starts no background work, at the first write.)"""
    customer = create_customer(admin)
    create_meter(admin, key="api_calls")
    assert admin.post("/v1/events", {"id": "e1", "customer_id": customer["id"], "meter": "api_calls"}).status == 201

    def gauges():
        families = parse(admin.get("/metrics").raw.decode("utf-8"))
        return (families["meterline_event_id_filter_ready"]["samples"][0][2],
                families["meterline_event_id_filter_bytes"]["samples"][0][2])

    wait_for(lambda: gauges()[0] == 1, message="the filter was never ready")
    assert gauges()[1] == 2 ** 20  # the smallest filter: 8 M bits


def test_label_values_are_escaped():
    from billing.web import prometheus
    counter = prometheus.Counter("x_total", "Help with a \\ backslash\nand a line.", ("route",))
    counter.inc('a"b\\c\nd')
    lines = []
    prometheus.render_counter(lines, counter)
    text = "\n".join(lines) + "\n"
    assert 'x_total{route="a\\"b\\\\c\\nd"} 1' in text
    assert "# HELP x_total Help with a \\\\ backslash\\nand a line." in text
    parse(text)


def test_metrics_need_a_staff_credential_unless_public(server, admin, tmp_path):
    customer = create_customer(admin)
    assert server.client().get("/metrics").status == 401
    assert server.client(make_key(server, customer_id=customer["id"])).get("/metrics").status == 403
    assert server.client(make_key(server, role="ingest")).get("/metrics").status == 403
    assert server.client(make_key(server, role="viewer")).get("/metrics").status == 200
    public = RunningServer(temp_db(tmp_path / "public"), env={"BILLING_METRICS_PUBLIC": "1"})
    try:
        assert public.client().get("/metrics").status == 200
    finally:
        public.stop()


def test_a_scrape_never_writes(server, admin):
    with WriteCounter(server) as writes:
        for _ in range(5):
            assert admin.get("/metrics").status == 200
    assert writes == []
