"""The /proc collector (§10, billing/collect.py): the pure parts against fixture
text, and the real `python3 -m billing.collect` against a real `python3
server.py`: setup, refusals, --once, measurement accuracy, an outage with a
spool, a restarted collector, a --pid that exits."""

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from decimal import Decimal

import pytest

from billing import collect
from billing.collect import (MICRO, NS, Integral, Sample, build_events, cores_micros, counter_delta, cpu_cgroup_dirs,
                            encode_json, event_id, failed_indexes, format_number, parse_cfs, parse_cpu_max,
                            parse_diskstats, parse_io, parse_meminfo, parse_net_dev, parse_pid_stat,
                            parse_proc_cgroup, parse_proc_stat, parse_status_rss, quantity, ratio_micros, rfc3339,
                            to_quantity, unknown_meters, window_quantities, window_start, window_start_ns)
from tests.helpers import free_port, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ADMIN_KEY = "mk_collector_admin_key_0123456789"
pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


# ------------------------------------------------------------------ fixtures text

PROC_STAT = """cpu  321383 14660 94994 184842 26327 0 5855 17062 40 7
cpu0 149295 7283 46461 107001 11733 0 2255 8548 0 0
cpu1 172088 7377 48533 77841 14593 0 3600 8513 0 0
intr 1234 0 0
ctxt 99
btime 1700000000
"""

PID_STAT = ("4242 (my (odd) proc) S 1 4242 4242 0 -1 4194560 1000 0 0 0 150 25 7 8 20 0 3 0 987654 "
            "123456789 2000 18446744073709551615 1 1 0 0 0 0 0 16781312 17410 0 0 0 17 1 0 0 0 0 0\n")

STATUS = """Name:\tpython3
State:\tS (sleeping)
VmPeak:\t  300000 kB
VmRSS:\t   12345 kB
RssAnon:\t    8000 kB
Threads:\t1
"""

KTHREAD_STATUS = "Name:\tkworker/0:1\nState:\tI (idle)\nThreads:\t1\n"

MEMINFO = """MemTotal:       16000000 kB
MemFree:         1000000 kB
MemAvailable:    6000000 kB
Buffers:          200000 kB
Cached:          3000000 kB
"""

PID_IO = """rchar: 100
wchar: 200
syscr: 1
syscw: 2
read_bytes: 4096
write_bytes: 8388608
cancelled_write_bytes: 0
"""

NET_DEV = """Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 116079152650 3291947    0    0    0     0          0         0 116079152650 3291947    0    0    0     0       0          0
  eth0: 124152718   17629    0    0    0     0          0         0  1418643   16589    0    0    0     0       0          0
veth12ab:98765432101 5 0 0 0 0 0 0 1000 5 0 0 0 0 0 0
"""

DISKSTATS = """   7       0 loop0 10 0 800 0 0 0 0 0 0 0 0 0 0 0 0 0 0
   1       0 ram0 5 0 40 0 5 0 40 0 0 0 0
 254       0 vda 53327 11099 3122650 49861 561738 64572 239580960 3857856 0 534476 4474129 143735 133 223989040 279444 143404 286966
 254       1 vda1 53000 11000 3122000 49000 561000 64000 239580000 3857000 0 534000 4474000
   8       0 sda 100 0 1000 0 200 0 2000 0 0 0 0
   8       1 sda1 100 0 1000 0 200 0 2000 0 0 0 0
 259       0 nvme0n1 1 0 8 0 1 0 8 0 0 0 0
 259       1 nvme0n1p1 1 0 8 0 1 0 8 0 0 0 0
 179       0 mmcblk0 2 0 16 0 2 0 16 0 0 0 0
 179       1 mmcblk0p1 2 0 16 0 2 0 16 0 0 0 0
 253       0 dm-0 9 0 72 0 9 0 72 0 0 0 0
 253       1 zram0 3 0 24 0 3 0 24 0 0 0 0
   9       0 md0 4 0 32 0 4 0 32 0 0 0 0
"""

MOUNTINFO_V1 = """23 1 254:0 / / rw,relatime - ext4 /dev/vda rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""

MOUNTINFO_V2 = """23 1 254:0 / / rw,relatime - ext4 /dev/vda rw
30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate
"""


# ------------------------------------------------------------------ pure parts

def test_proc_stat_counts_non_idle_jiffies():
    # user + nice + system + irq + softirq + steal; guest is inside user already; idle and iowait are idle
    assert parse_proc_stat(PROC_STAT) == 321383 + 14660 + 94994 + 0 + 5855 + 17062
    assert parse_proc_stat("cpu  10 20 30 40\n") == 60  # an old kernel with four fields
    with pytest.raises(ValueError):
        parse_proc_stat("cpu0 1 2 3 4\n")
    assert parse_proc_stat(open("/proc/stat").read()) > 0


def test_pid_stat_with_parentheses_in_the_name():
    stat = parse_pid_stat(PID_STAT)
    assert stat == {"state": "S", "ticks": 150 + 25, "start": 987654}
    mine = parse_pid_stat(open("/proc/self/stat").read())
    assert mine["state"] == "R" and mine["ticks"] >= 0 and mine["start"] > 0


def test_status_rss_and_meminfo():
    assert parse_status_rss(STATUS) == 12345 * 1024
    assert parse_status_rss(KTHREAD_STATUS) == 0
    assert parse_meminfo(MEMINFO) == (16000000 - 6000000) * 1024
    without_available = MEMINFO.replace("MemAvailable:    6000000 kB\n", "")
    assert parse_meminfo(without_available) == (16000000 - 1000000 - 200000 - 3000000) * 1024


def test_pid_io():
    assert parse_io(PID_IO) == 4096 + 8388608


def test_net_dev_excludes_loopback():
    assert parse_net_dev(NET_DEV) == {"eth0": 124152718 + 1418643, "veth12ab": 98765432101 + 1000}


def test_diskstats_whole_disks_only():
    by_name = parse_diskstats(DISKSTATS)
    assert by_name == {"vda": (3122650 + 239580960) * 512, "sda": 3000 * 512, "nvme0n1": 16 * 512,
                       "mmcblk0": 32 * 512}
    # with /sys/block's list of physical disks, only those
    assert parse_diskstats(DISKSTATS, {"vda", "sda"}) == {"vda": (3122650 + 239580960) * 512, "sda": 3000 * 512}


def test_cgroup_cpu_quota_files():
    assert parse_cpu_max("max 100000\n") is None
    assert parse_cpu_max("150000 100000\n") == Decimal("1.5")
    assert parse_cpu_max("50000 100000") == Decimal("0.5")
    assert parse_cfs("-1\n", "100000\n") is None
    assert parse_cfs("200000\n", "100000\n") == 2
    assert cores_micros(4, Decimal("1.5")) == 1_500_000
    assert cores_micros(2, None) == 2_000_000
    assert cores_micros(2, Decimal(3)) == 2_000_000  # the quota only lowers
    assert cores_micros(8, Decimal(1) / Decimal(3)) == 333_333


def test_cgroup_directories_v1_and_v2():
    assert parse_proc_cgroup("12:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n0::/\n") == {
        "cpu": "/docker/abc", "cpuacct": "/docker/abc", "memory": "/docker/abc", "": "/"}
    assert cpu_cgroup_dirs("12:cpu,cpuacct:/docker/abc\n0::/\n", MOUNTINFO_V1) == [
        ("v1", "/sys/fs/cgroup/cpu,cpuacct/docker/abc", "/sys/fs/cgroup/cpu,cpuacct"),
        ("v2", "/sys/fs/cgroup/unified", "/sys/fs/cgroup/unified")]
    assert cpu_cgroup_dirs("0::/system.slice/app.service\n", MOUNTINFO_V2) == [
        ("v2", "/sys/fs/cgroup/system.slice/app.service", "/sys/fs/cgroup")]
    # a container sees its own cgroup mounted at the root of the hierarchy
    bind = "40 31 0:29 /docker/abc /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n"
    assert cpu_cgroup_dirs("3:cpu:/docker/abc\n", bind) == [("v1", "/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu")]
    # a path cannot climb out of its mount
    assert cpu_cgroup_dirs("0::/../../etc\n", MOUNTINFO_V2) == []


def test_counter_deltas_and_resets():
    assert counter_delta(None, 5) is None  # the first sample is the baseline
    assert counter_delta(5, 8) == 3
    assert counter_delta(8, 3) is None  # went backwards: a new baseline, never negative
    series = [100, 150, 20, 70, 70]
    deltas = [counter_delta(a, b) for a, b in zip([None] + series, series)]
    assert deltas == [None, 50, None, 50, 0]
    # per-interface counters: a reset or a new interface adds 0, a vanished one nothing
    previous = {"eth0": 100, "eth1": 50, "gone": 7}
    current = {"eth0": 150, "eth1": 10, "eth2": 999}
    assert counter_delta(previous, current) == 50
    assert counter_delta(None, current) is None


def test_windows_and_ids():
    assert window_start(1_700_000_007.9, 30) == 1_699_999_980
    assert window_start(1_700_000_010, 10) == 1_700_000_010  # a boundary starts its window
    assert window_start_ns(1_700_000_007_900_000_000, 30) == 1_699_999_980
    assert window_start_ns(1_700_000_009_999_999_999, 10) == 1_700_000_000
    assert event_id("api", "cpu_core_seconds", 1_699_999_980) == "api-cpu_core_seconds-1699999980"
    assert rfc3339(1_699_999_980) == "2023-11-14T22:13:00Z"


def test_quantities_are_exact_decimals_with_at_most_six_places():
    assert ratio_micros(1, 3) == 333_333
    assert ratio_micros(2, 3) == 666_667  # half up
    assert ratio_micros(1, 2_000_000) == 1  # exactly half a millionth rounds up
    assert ratio_micros(1, 2_000_001) == 0
    assert quantity(333_333) == Decimal("0.333333")
    assert str(quantity(1_500_000)) == "1.5"
    assert format_number(quantity(2_000_000)) == "2"
    assert format_number(quantity(10 ** 12 * MICRO)) == "1000000000000"
    assert to_quantity(Decimal("1.0000005")) == Decimal("1.000001")
    assert to_quantity(Decimal("1.00000049")) == 1
    assert to_quantity("0.1") == Decimal("0.1")
    with pytest.raises(TypeError):
        to_quantity(0.1)
    with pytest.raises(ValueError):
        quantity(-1)
    assert encode_json({"q": Decimal("1E+2"), "r": Decimal("0.000001"), "s": [Decimal("1.50")]}) == \
        '{"q":100,"r":0.000001,"s":[1.5]}'
    with pytest.raises(TypeError):
        encode_json({"q": 1.5})


def test_window_quantities_and_events():
    t0 = 1_700_000_010 * NS
    memory, cores = Integral(), Integral()
    for t in range(0, 31, 5):  # 2 GB resident and 2 cores for 30 s
        memory.add(t0 + t * NS, 2_000_000_000)
        cores.add(t0 + t * NS, 2 * MICRO)
    previous = Sample(t0, 100, {"eth0": 1000}, 5000, 2_000_000_000, 2 * MICRO)
    current = Sample(t0 + 30 * NS, 250, {"eth0": 3000}, 5000 + 4096, 2_000_000_000, 2 * MICRO)
    micros = window_quantities(previous, current, 100, memory.take(), cores.take())
    assert micros == {"cpu_core_seconds": 1_500_000, "cpu_allocated_core_seconds": 60 * MICRO,
                      "memory_gb_seconds": 60 * MICRO, "network_bytes": 2000 * MICRO,
                      "disk_bytes": 4096 * MICRO}
    assert memory.take() == 0  # taken
    start = window_start_ns(previous.t_ns, 30)
    events = build_events(micros, start, "api", "node-1", 2 * MICRO, 7)
    assert [e["id"] for e in events] == [f"api-{m}-{start}" for m in collect.METRICS]
    for event in events:
        assert event["customer_id"] == 7 and event["timestamp"] == rfc3339(start)
        assert event["properties"] == {"service": "api", "host": "node-1", "cores": 2}
        assert isinstance(event["quantity"], Decimal) and event["quantity"].as_tuple().exponent >= -6
    assert events[0]["quantity"] == Decimal("1.5")
    # a counter reset leaves that metric out of the window; an external customer id is sent as "customer"
    reset = Sample(t0 + 30 * NS, 20, {"eth0": 3000}, 5000, None, None)
    micros = window_quantities(previous, reset, 100, 0, 0)
    assert micros["cpu_core_seconds"] is None and micros["disk_bytes"] == 0
    events = build_events(micros, start, "api", "node-1", MICRO, "acme")
    assert "cpu_core_seconds" not in [e["meter"] for e in events]
    assert all(e["customer"] == "acme" and "customer_id" not in e for e in events)
    # gauges integrate by trapezoids over their sample times
    gauge = Integral()
    gauge.add(0, 10)
    gauge.add(NS, 20)
    assert ratio_micros(gauge.take(), 2 * NS) == 15 * MICRO


def test_error_answers():
    answer = {"error": {"code": "validation_error", "message": "bad", "details": [
        {"index": 3, "field": "timestamp", "message": "is older than the lateness limit"},
        {"index": 1, "field": "meter", "message": "unknown meter 'disk_bytes'"}]}}
    assert failed_indexes(answer, 5) == {1, 3}
    assert failed_indexes(answer, 2) is None  # out of range: the whole batch is suspect
    assert failed_indexes({"error": {"details": [{"field": "events", "message": "x"}]}}, 5) is None
    assert unknown_meters(answer) == {"disk_bytes"}
    text = collect.error_text(400, answer)
    assert "validation_error" in text and "3.timestamp: is older" in text


class FakeApi:
    """Answers POST /v1/events/batch from a list of (status, body) and records the batches."""

    url = "http://fake"

    def __init__(self, answers):
        self.answers = list(answers)
        self.batches = []

    def request(self, method, path, body=None, timeout=None):
        assert (method, path) == ("POST", "/v1/events/batch")
        self.batches.append([e["id"] for e in body["events"]])
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def _delivery(tmp_path, answers, events):
    spool = collect.Spool(str(tmp_path / "x.spool"))
    outbox = collect.Outbox(spool, events)
    err = io.StringIO()
    api = FakeApi(answers)
    return collect.Delivery(api, outbox, 1, api.url, 30, err, True), api, spool, err


def _events(n, start=0):
    return [{"id": f"s-cpu_core_seconds-{start + i}", "meter": "cpu_core_seconds", "quantity": Decimal("0.5")}
            for i in range(n)]


def test_delivery_keeps_on_outage_and_drops_refused_events_loudly(tmp_path):
    delivery, api, spool, err = _delivery(tmp_path, [
        collect.Unreachable("connection refused"),
        (503, {"error": {"code": "unavailable", "message": "busy"}}),
        (400, {"error": {"code": "validation_error", "message": "bad", "details": [
            {"index": 1, "field": "timestamp", "message": "is older than the lateness limit"}]}}),
        (200, {"accepted": 2, "duplicates": 0})], _events(3))
    assert delivery.deliver() == "retry"
    assert "unreachable" in err.getvalue()
    assert [e["id"] for e in spool.load(err)] == [e["id"] for e in _events(3)]  # written to the spool
    assert delivery.deliver() == "retry"  # a 5xx keeps everything too
    assert len(delivery.outbox) == 3
    assert delivery.deliver() == "ok"
    assert api.batches[-1] == [_events(3)[0]["id"], _events(3)[2]["id"]]  # the refused one is dropped
    assert "DROPPED" in err.getvalue() and "is older than the lateness limit" in err.getvalue()
    assert not os.path.exists(spool.path)  # nothing waiting: no spool


def test_delivery_sends_oldest_first_in_batches_of_10000(tmp_path):
    delivery, api, spool, err = _delivery(tmp_path, [(200, {}), (200, {}), (200, {})], _events(20_001))
    assert delivery.deliver() == "ok"
    assert [len(b) for b in api.batches] == [10_000, 10_000, 1]
    assert api.batches[0][0].endswith("-0") and api.batches[2][0].endswith("-20000")


def test_delivery_stops_on_bad_key_and_missing_meter(tmp_path):
    delivery, api, spool, err = _delivery(tmp_path, [(401, {"error": {"code": "unauthenticated",
                                                                      "message": "The token is not valid."}})],
                                          _events(2))
    assert delivery.deliver() == "fatal" and "refused the API key" in delivery.fatal
    assert len(spool.load(err)) == 2  # kept for when the key is fixed
    delivery, api, spool, err = _delivery(tmp_path, [(400, {"error": {"code": "validation_error", "message": "x",
                                                                      "details": [{"index": 0, "field": "meter",
                                                                                   "message": "unknown meter "
                                                                                   "'cpu_core_seconds'"}]}})],
                                          _events(2))
    assert delivery.deliver() == "fatal"
    assert "cpu_core_seconds" in delivery.fatal and "--setup" in delivery.fatal


def test_spool_file_is_replaced_atomically_and_locked(tmp_path):
    spool = collect.Spool(str(tmp_path / "s" / "c.spool"))
    assert spool.lock()
    assert not collect.Spool(spool.path).lock()  # a second collector stays off it
    events = _events(3)
    spool.save(events)
    assert sorted(os.listdir(tmp_path / "s")) == ["c.spool", "c.spool.lock"]  # no temporary file left
    loaded = spool.load(io.StringIO())
    assert loaded == events and isinstance(loaded[0]["quantity"], Decimal)
    spool.save([])
    assert not os.path.exists(spool.path)
    with open(spool.path, "w") as f:
        f.write("{not json")
    err = io.StringIO()
    assert spool.load(err) == [] and "unreadable" in err.getvalue()


def test_argument_errors(capsys):
    base = ["--url", "http://127.0.0.1:8000", "--key", "k", "--customer", "1", "--service", "api"]
    cases = [
        (["--key", "k", "--customer", "1", "--service", "api"], "--url"),
        (base[:2] + base[4:], "--key is required"),
        (base[:4] + base[6:], "--customer"),
        (base + ["--interval", "0"], "must be 1 or more"),
        (base + ["--interval", "1.5"], "not a whole number"),
        (base + ["--pid", "1", "--host"], "not allowed with argument"),
        (base + ["--pid", "99999999"], "no such process"),
        (["--url", "ftp://x", "--key", "k", "--setup"], "not an http"),
        (base[:6] + ["--service", "bad name/"], "--service"),
        (base + ["--setup", "--once"], "do not go together"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as exit_:
            collect.parse_args(argv, environ={})
        assert exit_.value.code == 2
        assert message in capsys.readouterr().err, argv
    args = collect.parse_args(base[:2] + base[4:], environ={"METERLINE_KEY": "from-env", "HOME": "/h"})
    assert args.key == "from-env" and args.pid is None and args.interval == 30 and args.customer == 1
    assert args.spool.endswith(".meterline-collect-api.spool")
    args = collect.parse_args(["--url", "http://x/", "--key", "k", "--setup"], environ={})
    assert args.setup and args.url == "http://x"


# ------------------------------------------------------------------ real processes

class Server:
    """`python3 server.py` on a port and database of its own; stop and start again on the same ones."""

    def __init__(self, folder, port=None):
        self.folder = str(folder)
        self.db = os.path.join(self.folder, "billing.db")
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None
        self.start()

    def start(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("BILLING_")}
        env.update({"BILLING_ADMIN_KEY": ADMIN_KEY, "BILLING_ADMIN_PASSWORD": "collector-password-1"})
        deadline = time.monotonic() + 20
        while True:
            log = open(os.path.join(self.folder, "server.log"), "a")
            self.proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "server.py"), "--port", str(self.port),
                                          "--db", self.db, "--no-scheduler", "--quiet"],
                                         cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log, text=True)
            log.close()
            line = self.proc.stdout.readline()
            if "listening on" in line:
                return
            self.proc.wait(timeout=10)  # the port may still be held: try again
            if time.monotonic() > deadline:
                raise AssertionError(f"server did not start: {line}")
            time.sleep(0.2)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc:
            self.proc.stdout.close()

    def call(self, method, path, body=None, key=ADMIN_KEY):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        if data:
            request.add_header("Content-Type", "application/json")
        request.add_header("Authorization", f"Bearer {key}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read() or b"null", parse_float=Decimal)
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null", parse_float=Decimal)

    def customer(self, name):
        status, body = self.call("POST", "/v1/customers", {"name": name, "email": f"{name}@example.com"})
        assert status == 201, body
        return body["id"]

    def events(self, customer_id, meter=None):
        """All the customer's events (following the cursor)."""
        found, cursor = [], None
        while True:
            query = {"customer_id": customer_id, "limit": 1000}
            if meter:
                query["meter"] = meter
            if cursor:
                query["cursor"] = cursor
            status, body = self.call("GET", "/v1/events?" + urllib.parse.urlencode(query))
            assert status == 200, body
            found += body["data"]
            cursor = body["next_cursor"]
            if not cursor:
                return found

    def usage(self, customer_id, meter, service, since):
        query = urllib.parse.urlencode({"meter": meter, "from": rfc3339(int(since) - 3600),
                                        "to": rfc3339(int(time.time()) + 3600), "group_by": "service"})
        status, body = self.call("GET", f"/v1/customers/{customer_id}/usage?{query}")
        assert status == 200, body
        groups = {g["group"]["service"]: g["value"] for g in body["usage"][0]["groups"]}
        return groups.get(service, 0)


def create_meters(server):
    for key, (name, unit) in collect.METERS.items():
        status, body = server.call("POST", "/v1/meters", {"key": key, "name": name, "unit": unit,
                                                          "aggregation": "sum", "group_by": ["service", "host"]})
        assert status == 201, body


class Collector:
    """`python3 -m billing.collect ...` with its output in files."""

    def __init__(self, folder, *args, name="collector"):
        self.out_path = os.path.join(str(folder), f"{name}.out")
        self.err_path = os.path.join(str(folder), f"{name}.err")
        env = {**os.environ, "HOME": str(folder)}
        env.pop("METERLINE_KEY", None)
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "billing.collect", *map(str, args)],
                                         cwd=ROOT, env=env, stdout=out, stderr=err)

    @property
    def out(self):
        return open(self.out_path).read()

    @property
    def err(self):
        return open(self.err_path).read()

    def wait_for(self, text, timeout=15):
        deadline = time.monotonic() + timeout
        while text not in self.out + self.err:
            assert self.proc.poll() is None or text in self.out + self.err, (self.out, self.err)
            assert time.monotonic() < deadline, f"no {text!r} in {self.out!r} {self.err!r}"
            time.sleep(0.05)

    def wait(self, timeout=20):
        return self.proc.wait(timeout=timeout)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def run_collector(folder, *args, timeout=30):
    env = {**os.environ, "HOME": str(folder)}
    env.pop("METERLINE_KEY", None)
    return subprocess.run([sys.executable, "-m", "billing.collect", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def metered(tmp_path_factory):
    """One server with the five meters, for the tests that do not restart it."""
    server = Server(tmp_path_factory.mktemp("collector-server"))
    create_meters(server)
    yield server
    server.stop()


def test_setup_creates_the_meters_once_and_missing_meters_stop_the_collector(tmp_path):
    server = Server(tmp_path)
    try:
        customer = server.customer("setup")
        common = ["--url", server.url, "--customer", customer, "--service", "svc", "--spool", tmp_path / "s.spool"]
        # no meters: exit 2, naming them and the way to create them
        result = run_collector(tmp_path, *common, "--key", ADMIN_KEY, "--once", "--interval", "1")
        assert result.returncode == 2, result
        for key in collect.METRICS:
            assert key in result.stderr
        assert "--setup" in result.stderr and "Traceback" not in result.stderr
        # an ingest key cannot read meters: the first batch's answer says which are missing
        status, body = server.call("POST", "/v1/api-keys", {"name": "collector", "role": "ingest"})
        ingest_key = body["key"]
        result = run_collector(tmp_path, *common, "--key", ingest_key, "--once", "--interval", "1")
        assert result.returncode == 2 and "cpu_core_seconds" in result.stderr and "--setup" in result.stderr
        # --setup needs an admin key
        result = run_collector(tmp_path, "--url", server.url, "--key", ingest_key, "--setup")
        assert result.returncode == 2 and "admin" in result.stderr
        # --setup creates the five
        result = run_collector(tmp_path, "--url", server.url, "--key", ADMIN_KEY, "--setup")
        assert result.returncode == 0, result
        assert "5 meters created" in result.stdout
        meters = {}
        for key in collect.METRICS:
            status, meter = server.call("GET", f"/v1/meters/{key}")
            assert status == 200
            assert meter["aggregation"] == "sum" and meter["group_by"] == ["service", "host"]
            meters[key] = meter
        # a second --setup changes nothing
        result = run_collector(tmp_path, "--url", server.url, "--key", ADMIN_KEY, "--setup")
        assert result.returncode == 0 and "0 meters created" in result.stdout
        assert {key: server.call("GET", f"/v1/meters/{key}")[1] for key in collect.METRICS} == meters
    finally:
        server.stop()


def test_one_missing_meter_is_named(tmp_path):
    server = Server(tmp_path)
    try:
        customer = server.customer("partial")
        for key in collect.METRICS[:-1]:
            name, unit = collect.METERS[key]
            assert server.call("POST", "/v1/meters", {"key": key, "name": name, "aggregation": "sum"})[0] == 201
        result = run_collector(tmp_path, "--url", server.url, "--key", ADMIN_KEY, "--customer", customer,
                               "--service", "svc", "--once", "--interval", "1")
        assert result.returncode == 2
        assert "missing on the server: disk_bytes." in result.stderr
        assert f"--url {server.url} --key <ADMIN_KEY> --setup" in result.stderr
        assert server.events(customer) == []
    finally:
        server.stop()


def test_bad_key_and_unknown_customer_exit_2(metered, tmp_path):
    result = run_collector(tmp_path, "--url", metered.url, "--key", "mk_not_a_key", "--customer", 1,
                           "--service", "svc", "--once", "--interval", "1")
    assert result.returncode == 2
    assert "refused the API key" in result.stderr and "check --key" in result.stderr
    assert "Traceback" not in result.stderr
    result = run_collector(tmp_path, "--url", metered.url, "--key", ADMIN_KEY, "--customer", 99999,
                           "--service", "svc", "--once", "--interval", "1")
    assert result.returncode == 2 and "customer 99999 does not exist" in result.stderr


def test_once_posts_one_window_per_metric(metered, tmp_path):
    customer = metered.customer("once")
    before = time.time()
    result = run_collector(tmp_path, "--url", metered.url, "--key", ADMIN_KEY, "--customer", customer,
                           "--service", "once-svc", "--host", "--interval", "1", "--once",
                           "--spool", tmp_path / "once.spool")
    assert result.returncode == 0, result
    events = metered.events(customer)
    assert sorted(e["meter"] for e in events) == sorted(collect.METRICS)
    start = _window_of(events[0])  # the window holding the baseline, taken once the collector had started
    assert window_start(before, 1) <= start <= time.time() - 1
    for event in events:
        assert event["id"] == f"once-svc-{event['meter']}-{start}"
        assert event["timestamp"] == rfc3339(start)
        assert event["properties"]["service"] == "once-svc"
        assert event["properties"]["host"] == socket.gethostname()
        assert event["properties"]["cores"] == os.cpu_count()
    allocated = next(e for e in events if e["meter"] == "cpu_allocated_core_seconds")["quantity"]
    assert os.cpu_count() <= allocated < os.cpu_count() * 2  # all CPUs x about one second
    assert not os.path.exists(tmp_path / "once.spool")


CHILD = r"""
import os, sys, time
def cpu():
    t = os.times()
    return t.user + t.system
print("ready", cpu(), flush=True)
sys.stdin.readline()
before = cpu()
start = time.process_time()
x = 0
while time.process_time() - start < 1.0:
    x += 1
with open(sys.argv[1], "wb") as f:
    for _ in range(8):
        f.write(b"m" * (1 << 20))
    f.flush()
    os.fsync(f.fileno())
print("done", before, cpu(), time.time(), flush=True)
sys.stdin.readline()
"""


def test_pid_measurement_matches_what_the_process_used_and_its_exit_ends_the_collector(metered, tmp_path):
    customer = metered.customer("accuracy")
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path / "written.bin")],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    collector = None
    try:
        assert child.stdout.readline().startswith("ready")
        since = time.time()
        collector = Collector(tmp_path, "--url", metered.url, "--key", ADMIN_KEY, "--customer", customer,
                              "--service", "burner", "--pid", child.pid, "--interval", 1,
                              "--spool", tmp_path / "acc.spool")
        collector.wait_for("collecting process")  # the baseline is taken
        child.stdin.write("go\n")
        child.stdin.flush()
        _, before, after, done_at = child.stdout.readline().split()
        used = float(after) - float(before)  # the child's own CPU for the burn and the writes
        # wait for a window that starts after the work ended: every earlier one is posted
        wait_for(lambda: any(int(e["id"].rsplit("-", 1)[1]) > float(done_at) + 1
                             for e in metered.events(customer, "cpu_core_seconds")),
                 15, "no window after the work was posted", interval=0.1)
        measured = metered.usage(customer, "cpu_core_seconds", "burner", since)
        assert abs(measured - Decimal(str(used))) <= Decimal("0.2") * Decimal(str(used)), (measured, used)
        written = metered.usage(customer, "disk_bytes", "burner", since)
        assert 8 * 2 ** 20 <= written < 64 * 2 ** 20, written
        assert metered.usage(customer, "memory_gb_seconds", "burner", since) > 0
        # a window between two on-time samples is exactly cores x the interval
        allocated = [e for e in metered.events(customer, "cpu_allocated_core_seconds")]
        cores = allocated[0]["properties"]["cores"]
        assert cores == len(os.sched_getaffinity(child.pid))
        full = sorted(allocated, key=lambda e: e["timestamp"])[1:-1]
        assert full and sum(e["quantity"] == cores for e in full) >= len(full) - 1, full
        print(f"\ncollector accuracy: cpu measured {measured} s, child used {used:.2f} s;"
              f" disk {written} bytes for {8 * 2 ** 20} written")
        # the process exits: the collector says so, sends what it has, and stops with 1
        child.stdin.write("exit\n")
        child.stdin.flush()
        child.wait(timeout=10)
        assert collector.wait(timeout=15) == 1
        assert f"process {child.pid} exited" in collector.err
        assert "Traceback" not in collector.err
        assert not os.path.exists(tmp_path / "acc.spool")
        ids = [e["id"] for e in metered.events(customer)]
        assert len(ids) == len(set(ids))
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if collector:
            collector.stop()


def read_spool(path):
    return json.loads(path.read_text(), parse_float=Decimal)["events"]


def _window_of(event):
    return int(event["id"].rsplit("-", 1)[1])


def test_outage_loses_nothing_and_counts_nothing_twice(tmp_path):
    interval = 2
    server = Server(tmp_path)
    collector = None
    try:
        create_meters(server)
        customer = server.customer("outage")
        spool = tmp_path / "outage.spool"
        collector = Collector(tmp_path, "--url", server.url, "--key", ADMIN_KEY, "--customer", customer,
                              "--service", "edge", "--host", "--interval", interval, "--spool", spool)
        collector.wait_for("collecting this host")
        wait_for(lambda: len(server.events(customer, "cpu_core_seconds")) >= 1, 10, "no first window", interval=0.1)
        server.stop()
        # two intervals without a server: the windows wait in memory and in the spool
        time.sleep(2 * interval + 0.5)
        held = read_spool(spool)
        assert len({_window_of(e) for e in held}) >= 2, held
        assert "server unreachable" in collector.err
        server.start()
        wait_for(lambda: not spool.exists(), 15, "the spool was not flushed", interval=0.1)
        last_held = max(_window_of(e) for e in held)
        wait_for(lambda: any(_window_of(e) > last_held + interval for e in server.events(customer)), 15,
                 "no window after the outage", interval=0.1)
        assert collector.stop() == 0
        assert "reachable again" in collector.err
        events = server.events(customer)
        ids = [e["id"] for e in events]
        assert len(ids) == len(set(ids)), "an event is listed twice"
        by_metric = {}
        for event in events:
            start = _window_of(event)
            assert event["id"] == f"edge-{event['meter']}-{start}"
            assert event["timestamp"] == rfc3339(start) and start % interval == 0
            by_metric.setdefault(event["meter"], set()).add(start)
        assert set(by_metric) == set(collect.METRICS)
        windows = by_metric["cpu_core_seconds"]
        assert all(starts == windows for starts in by_metric.values())  # every window has all five
        first, last = min(windows), max(windows)
        assert windows == set(range(first, last + interval, interval)), "a window is missing"
        assert {_window_of(e) for e in held} <= windows  # what waited in the spool arrived
        # the usage is the sum of the events, each counted once
        for meter in collect.METRICS:
            total = sum(e["quantity"] for e in events if e["meter"] == meter)
            assert server.usage(customer, meter, "edge", first) == total
        allocated = [e["quantity"] for e in sorted(events, key=_window_of)
                     if e["meter"] == "cpu_allocated_core_seconds"]
        assert allocated[1:] == [os.cpu_count() * interval] * (len(allocated) - 1)  # windows after the first are whole
    finally:
        if collector:
            collector.stop()
        server.stop()


def test_restarted_collector_sends_its_spool(metered, tmp_path):
    customer = metered.customer("spooled")
    spool = tmp_path / "restart.spool"
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    first = Collector(tmp_path, "--url", dead, "--key", ADMIN_KEY, "--customer", customer, "--service", "batch",
                      "--host", "--interval", 1, "--spool", spool, name="first")
    try:
        first.wait_for("collecting this host")
        assert "unreachable" in first.err
        wait_for(lambda: spool.exists() and len(read_spool(spool)) >= 10, 10, "the spool did not fill", interval=0.1)
    finally:
        assert first.stop() == 0
    held = read_spool(spool)
    assert "kept in" in first.err
    result = run_collector(tmp_path, "--url", metered.url, "--key", ADMIN_KEY, "--customer", customer,
                           "--service", "batch", "--host", "--interval", 1, "--once", "--spool", spool)
    assert result.returncode == 0, result
    assert "from an earlier run" in result.stderr
    stored = {e["id"]: e for e in metered.events(customer)}
    for event in held:
        assert stored[event["id"]]["quantity"] == event["quantity"]
    assert len(stored) == len(held) + 5  # the spool and this run's window
    assert not spool.exists()
