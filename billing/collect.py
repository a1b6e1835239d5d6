"""Meterline collector (§10): samples /proc and posts usage events.

    python3 -m billing.collect --url URL --key KEY --customer ID --service NAME
        [--pid N | --host] [--interval 30] [--once] [--setup] [--spool PATH]

Every interval it reads /proc for one process (`--pid`) or the whole machine
(`--host`, the default) and posts one batch of five events to
`POST /v1/events/batch`:

    cpu_core_seconds            CPU time used (pid: utime+stime; host: non-idle jiffies)
    cpu_allocated_core_seconds  cores the process may use x seconds (affinity,
                                lowered to the cgroup CPU quota; host: all CPUs)
    memory_gb_seconds           resident memory (pid: VmRSS; host: MemTotal -
                                MemAvailable), bytes / 10^9 x seconds
    network_bytes               received + sent, `lo` excluded (pid: its network
                                namespace, /proc/<pid>/net/dev)
    disk_bytes                  pid: /proc/<pid>/io read_bytes + write_bytes;
                                host: sectors read + written of whole disks x 512

Event ids are `<service>-<metric>-<window start, unix s>`, windows aligned to
the interval, so a resend never counts twice. Samples the server did not take
(unreachable, 5xx, 429) stay in memory and in the spool file and are sent
later, oldest first; a restarted collector sends its spool first.

Standard library only, and self-contained: this file can be copied to a host
and run as `python3 collect.py ...`. The pure parts (parsing /proc text,
deltas, windows, ids, quantities) are plain functions, tested with fixture
text in tests/test_collector.py.
"""

import argparse
import fcntl
import http.client
import json
import os
import re
import signal
import socket
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal

METRICS = ("cpu_core_seconds", "cpu_allocated_core_seconds", "memory_gb_seconds", "network_bytes", "disk_bytes")
METERS = {  # key: (name, unit) -- created by --setup with aggregation "sum", group_by service and host
    "cpu_core_seconds": ("CPU used (core-seconds)", "core-second"),
    "cpu_allocated_core_seconds": ("CPU allocated (core-seconds)", "core-second"),
    "memory_gb_seconds": ("Memory (GB-seconds)", "GB-second"),
    "network_bytes": ("Network traffic (bytes)", "byte"),
    "disk_bytes": ("Disk I/O (bytes)", "byte"),
}
GROUP_BY = ["service", "host"]
MAX_BATCH = 10_000            # events per POST /v1/events/batch (the server's limit)
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EVENT_ROLES = ("admin", "ingest", "customer")  # roles allowed to post events
SERVICE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,99}$")
NS = 1_000_000_000
MICRO = 1_000_000
SECTOR = 512
HTTP_TIMEOUT = 10.0
PROG = "python3 -m billing.collect"


# ---------------------------------------------------------------- pure parsing

def parse_proc_stat(text):
    """Non-idle jiffies of all CPUs from /proc/stat's aggregate `cpu` line:
    user + nice + system + irq + softirq + steal (guest time is already inside
    user and nice; idle and iowait are idle)."""
    for line in text.splitlines():
        if line.startswith("cpu "):
            values = [int(v) for v in line.split()[1:9]]
            values += [0] * (8 - len(values))
            user, nice, system, _idle, _iowait, irq, softirq, steal = values
            return user + nice + system + irq + softirq + steal
    raise ValueError("/proc/stat has no aggregate 'cpu' line")


def parse_pid_stat(text):
    """/proc/<pid>/stat: {"state", "ticks" (utime + stime), "start" (starttime)}.
    The command name may hold spaces and parentheses: fields follow the last ')'."""
    rest = text[text.rindex(")") + 2:].split()
    # rest[0] is field 3 (state); utime, stime are fields 14, 15; starttime is 22
    return {"state": rest[0], "ticks": int(rest[11]) + int(rest[12]), "start": int(rest[19])}


def _kv_lines(text):
    values = {}
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep:
            values[name.strip()] = value.split()
    return values


def parse_status_rss(text):
    """Resident bytes (VmRSS) from /proc/<pid>/status; 0 when absent (kernel threads)."""
    fields = _kv_lines(text).get("VmRSS")
    if not fields:
        return 0
    return int(fields[0]) * (1024 if fields[1:2] == ["kB"] else 1)


def parse_meminfo(text):
    """Used bytes from /proc/meminfo: MemTotal - MemAvailable (kernels before
    3.14 lack MemAvailable: MemFree + Buffers + Cached stands in)."""
    values = {name: int(fields[0]) * 1024 for name, fields in _kv_lines(text).items() if fields}
    available = values.get("MemAvailable")
    if available is None:
        available = values.get("MemFree", 0) + values.get("Buffers", 0) + values.get("Cached", 0)
    return max(0, values["MemTotal"] - available)


def parse_io(text):
    """read_bytes + write_bytes from /proc/<pid>/io (bytes that went to or came
    from storage; page-cache hits are not disk I/O)."""
    values = _kv_lines(text)
    return int(values["read_bytes"][0]) + int(values["write_bytes"][0])


def parse_net_dev(text):
    """{interface: received + sent bytes} from /proc/net/dev, `lo` excluded."""
    counters = {}
    for line in text.splitlines()[2:]:
        name, sep, data = line.partition(":")
        name = name.strip()
        if not sep or name == "lo":
            continue
        fields = data.split()
        counters[name] = int(fields[0]) + int(fields[8])
    return counters


_VIRTUAL_DISK = re.compile(r"^(?:loop|ram|zram|dm-|md|nbd)\d")
_PARTITION = re.compile(r"^(?:(?:[shv]d|xvd)[a-z]+\d+|(?:nvme\d+n\d+|mmcblk\d+|nbd\d+|loop\d+|md\d+)p\d+)$")


def parse_diskstats(text, whole_disks=None):
    """{device: bytes read + written} from /proc/diskstats (sectors x 512).
    Only whole disks count: those in `whole_disks` when given (the non-virtual
    entries of /sys/block), else by name: no partitions, no loop/ram/zram
    devices, no device-mapper or md devices (which would count the I/O of the
    disks under them a second time)."""
    counters = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 10:
            continue
        name = fields[2]
        if whole_disks is not None:
            if name not in whole_disks:
                continue
        elif _VIRTUAL_DISK.match(name) or _PARTITION.match(name):
            continue
        counters[name] = (int(fields[5]) + int(fields[9])) * SECTOR
    return counters


def parse_cpu_max(text):
    """Cores allowed by a cgroup v2 `cpu.max` ("quota period"), as a Decimal;
    None for "max" (no limit)."""
    parts = text.split()
    if not parts or parts[0] == "max":
        return None
    quota, period = int(parts[0]), int(parts[1]) if len(parts) > 1 else 100_000
    if quota <= 0 or period <= 0:
        return None
    return Decimal(quota) / Decimal(period)


def parse_cfs(quota_text, period_text):
    """Cores allowed by cgroup v1 cpu.cfs_quota_us / cpu.cfs_period_us; None for -1 (no limit)."""
    quota, period = int(quota_text.strip()), int(period_text.strip())
    if quota <= 0 or period <= 0:
        return None
    return Decimal(quota) / Decimal(period)


def parse_proc_cgroup(text):
    """/proc/<pid>/cgroup as {controller: path}; the cgroup v2 entry is under ""."""
    paths = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if not controllers:
            paths[""] = path
        for controller in controllers.split(","):
            if controller:
                paths[controller] = path
    return paths


def _unescape_mount(text):
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def cpu_cgroup_dirs(cgroup_text, mountinfo_text):
    """Where the CPU limits of a process live: [("v2"|"v1", cgroup directory,
    mount point)], from its /proc/<pid>/cgroup and /proc/<pid>/mountinfo."""
    paths = parse_proc_cgroup(cgroup_text)
    found = []
    for line in mountinfo_text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        root, mount = _unescape_mount(fields[3]), _unescape_mount(fields[4])
        fstype, superopts = tail[0], tail[2].split(",")
        if fstype == "cgroup2" and "" in paths:
            kind, path = "v2", paths[""]
        elif fstype == "cgroup" and "cpu" in superopts and "cpu" in paths:
            kind, path = "v1", paths["cpu"]
        else:
            continue
        if root != "/" and (path == root or path.startswith(root + "/")):
            path = path[len(root):]
        directory = os.path.normpath(mount + "/" + path.lstrip("/"))
        if directory == mount or directory.startswith(mount.rstrip("/") + "/"):
            found.append((kind, directory, mount))
    return found


def ratio_micros(numerator, denominator):
    """numerator / denominator in integer millionths, rounded half up (non-negative ints)."""
    return (2 * numerator * MICRO + denominator) // (2 * denominator)


def cores_micros(affinity_count, quota=None):
    """The cores a process may use, in millionths: its affinity count, lowered
    to the cgroup quota (a Decimal of cores) when one is set."""
    cores = affinity_count * MICRO
    if quota is not None:
        limit = quota.scaleb(6).to_integral_value(rounding=ROUND_HALF_UP)
        cores = min(cores, max(int(limit), 0))
    return cores


def counter_delta(previous, current):
    """How much a counter grew: None for the first sample (baseline) or when it
    went backwards (the process restarted, the counter was reset): the current
    value is then the new baseline. Never negative. Counters may be ints or
    {name: int} (interfaces, disks): then each name counts on its own, a name
    that appeared or went backwards adds 0 (its new baseline), a vanished one
    nothing."""
    if previous is None or current is None:
        return None
    if isinstance(current, dict):
        if not isinstance(previous, dict):
            return None
        total = 0
        for name, value in current.items():
            before = previous.get(name)
            if before is not None and value >= before:
                total += value - before
        return total
    if current < previous:
        return None
    return current - previous


def window_start(t, interval):
    """The start (unix seconds) of the interval-aligned window holding t (seconds)."""
    return int(t // interval) * interval


def window_start_ns(t_ns, interval):
    return (t_ns // (interval * NS)) * interval


def event_id(service, metric, start):
    return f"{service}-{metric}-{start}"


def rfc3339(unix_seconds):
    return datetime.fromtimestamp(unix_seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def quantity(micros):
    """Integer millionths as an exact Decimal (at most 6 fractional digits, no exponent)."""
    if isinstance(micros, bool) or not isinstance(micros, int) or micros < 0:
        raise ValueError(f"a quantity is a non-negative integer of millionths, not {micros!r}")
    value = Decimal(micros).scaleb(-6)
    return value.quantize(Decimal(1)) if micros % MICRO == 0 else value.normalize()


def to_quantity(value):
    """A number (int, Decimal or a decimal string, never a float) rounded half up to 6 decimals."""
    if isinstance(value, float) or isinstance(value, bool):
        raise TypeError("quantities are never binary floats")
    value = Decimal(value)
    if not value.is_finite() or value < 0:
        raise ValueError(f"not a valid quantity: {value}")
    micros = int(value.scaleb(6).to_integral_value(rounding=ROUND_HALF_UP))
    return quantity(micros)


def format_number(value):
    """A JSON number from an int or Decimal, never with an exponent."""
    if isinstance(value, bool) or not isinstance(value, (int, Decimal)):
        raise TypeError(f"not an exact number: {value!r}")
    if isinstance(value, int):
        return str(value)
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text if text not in ("-0", "") else "0"


def encode_json(value):
    """JSON text where Decimals are written as exact numbers."""
    if isinstance(value, dict):
        return "{" + ",".join(json.dumps(str(k)) + ":" + encode_json(v) for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(encode_json(v) for v in value) + "]"
    if isinstance(value, Decimal):
        return format_number(value)
    if isinstance(value, float):
        raise TypeError("binary floats are never sent")
    return json.dumps(value)


def decode_json(text):
    return json.loads(text, parse_float=Decimal)


@dataclass
class Sample:
    """One reading. Counters (cpu ticks, net and disk) are cumulative; memory
    (bytes) and cores (millionths) are gauges. None: not readable."""
    t_ns: int
    cpu_ticks: int = None
    net: object = None
    disk: object = None
    memory: int = None
    cores: int = None


class Integral:
    """Trapezoid integral of a gauge over time, kept doubled in integers (value x ns x 2)."""

    def __init__(self):
        self.last = None
        self.doubled = 0

    def add(self, t_ns, value):
        if value is None:
            return
        if self.last is not None and t_ns > self.last[0]:
            self.doubled += (self.last[1] + value) * (t_ns - self.last[0])
        if self.last is None or t_ns >= self.last[0]:
            self.last = (t_ns, value)

    def take(self):
        """The doubled area since the last take (the last point stays the start)."""
        doubled, self.doubled = self.doubled, 0
        return doubled


def window_quantities(previous, current, clk_tck, memory_doubled, cores_doubled):
    """{metric: quantity in millionths, or None when unknown (baseline, counter reset, unreadable)}."""
    ticks = counter_delta(previous.cpu_ticks, current.cpu_ticks)
    net = counter_delta(previous.net, current.net)
    disk = counter_delta(previous.disk, current.disk)
    return {
        "cpu_core_seconds": None if ticks is None else ratio_micros(ticks, clk_tck),
        # millionths of a core x ns x 2 -> core-seconds
        "cpu_allocated_core_seconds": ratio_micros(cores_doubled, 2 * MICRO * NS),
        # bytes x ns x 2 -> GB-seconds
        "memory_gb_seconds": ratio_micros(memory_doubled, 2 * NS * NS),
        "network_bytes": None if net is None else net * MICRO,
        "disk_bytes": None if disk is None else disk * MICRO,
    }


def build_events(micros_by_metric, start, service, host, cores, customer):
    """The batch events of one window: ids `<service>-<metric>-<start>`, timestamp
    the window start, quantities exact Decimals. Metrics whose value is None are
    left out. `customer` is an int id or an external id string."""
    properties = {"service": service, "host": host, "cores": quantity(cores)}
    events = []
    for metric in METRICS:
        micros = micros_by_metric.get(metric)
        if micros is None:
            continue
        event = {"id": event_id(service, metric, start)}
        event.update(customer_field(customer))
        event.update({"meter": metric, "quantity": quantity(micros), "timestamp": rfc3339(start),
                      "properties": dict(properties)})
        events.append(event)
    return events


def customer_field(customer):
    return {"customer_id": customer} if isinstance(customer, int) else {"customer": customer}


def failed_indexes(error_body, size):
    """The batch indexes a 400 answer names, or None when it names none."""
    details = ((error_body or {}).get("error") or {}).get("details") or []
    indexes = {d.get("index") for d in details if isinstance(d, dict)}
    indexes.discard(None)
    if not indexes or not all(isinstance(i, int) and 0 <= i < size for i in indexes):
        return None
    return indexes


def unknown_meters(error_body):
    """Meter keys a 400 answer calls unknown."""
    details = ((error_body or {}).get("error") or {}).get("details") or []
    found = set()
    for detail in details:
        if isinstance(detail, dict) and detail.get("field") == "meter":
            match = re.match(r"unknown meter '([^']+)'", str(detail.get("message", "")))
            if match:
                found.add(match.group(1))
    return found


def error_text(status, body):
    """A readable one-line account of an error answer."""
    error = (body or {}).get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return f"HTTP {status}"
    text = f"HTTP {status} {error.get('code', '')}: {error.get('message', '')}".rstrip(": ")
    details = error.get("details") or []
    parts = []
    for detail in details[:5]:
        if isinstance(detail, dict):
            where = ".".join(str(detail[k]) for k in ("index", "field") if detail.get(k) is not None)
            parts.append(f"{where}: {detail.get('message', '')}" if where else str(detail.get("message", "")))
    if parts:
        text += " (" + "; ".join(parts) + (f"; and {len(details) - 5} more" if len(details) > 5 else "") + ")"
    return text


def setup_command(url):
    return f"{PROG} --url {url} --key <ADMIN_KEY> --setup"


# ---------------------------------------------------------------- reading /proc

class ProcessGone(Exception):
    pass


def _read(path):
    with open(path, encoding="ascii", errors="replace") as f:
        return f.read()


def cgroup_quota(pid):
    """The lowest CPU quota (cores, Decimal) on the path from the process's
    cgroup up to its hierarchy's root, v2 and v1; None without any."""
    try:
        dirs = cpu_cgroup_dirs(_read(f"/proc/{pid}/cgroup"), _read(f"/proc/{pid}/mountinfo"))
    except OSError:
        return None
    lowest = None
    for kind, directory, mount in dirs:
        while True:
            try:
                if kind == "v2":
                    quota = parse_cpu_max(_read(os.path.join(directory, "cpu.max")))
                else:
                    quota = parse_cfs(_read(os.path.join(directory, "cpu.cfs_quota_us")),
                                      _read(os.path.join(directory, "cpu.cfs_period_us")))
            except (OSError, ValueError, IndexError):
                quota = None
            if quota is not None and (lowest is None or quota < lowest):
                lowest = quota
            if directory == mount or len(directory) <= len(mount):
                break
            directory = os.path.dirname(directory)
    return lowest


def whole_disks(sys_block="/sys/block"):
    """Names of the physical whole disks (entries of /sys/block not under
    /devices/virtual/); None when /sys/block cannot be read."""
    try:
        names = os.listdir(sys_block)
    except OSError:
        return None
    disks = set()
    for name in names:
        if "/devices/virtual/" not in os.path.realpath(os.path.join(sys_block, name)):
            disks.add(name.replace("!", "/"))
    return disks


class PidSampler:
    """Readings of one process. Raises ProcessGone once it has exited."""

    def __init__(self, pid):
        self.pid = pid
        self.label = f"process {pid}"
        try:
            stat = parse_pid_stat(_read(f"/proc/{pid}/stat"))
        except (FileNotFoundError, ProcessLookupError):
            raise ProcessGone(f"no process with pid {pid}") from None
        if stat["state"] in ("Z", "X", "x"):
            raise ProcessGone(f"process {pid} has already exited")
        self.start = stat["start"]
        _read(f"/proc/{pid}/io")  # PermissionError: not the process's user (nor root)

    def _file(self, name):
        try:
            return _read(f"/proc/{self.pid}/{name}")
        except (FileNotFoundError, ProcessLookupError):
            raise ProcessGone(f"process {self.pid} exited") from None

    def _stat(self):
        stat = parse_pid_stat(self._file("stat"))
        if stat["start"] != self.start:
            raise ProcessGone(f"process {self.pid} exited (the pid now belongs to another process)")
        if stat["state"] in ("Z", "X", "x"):
            raise ProcessGone(f"process {self.pid} exited")
        return stat

    def _cores(self):
        try:
            count = len(os.sched_getaffinity(self.pid))
        except ProcessLookupError:
            raise ProcessGone(f"process {self.pid} exited") from None
        return cores_micros(count, cgroup_quota(self.pid))

    def gauges(self):
        t = time.time_ns()
        self._stat()
        memory = parse_status_rss(self._file("status"))
        return t, memory, self._cores()

    def sample(self):
        t = time.time_ns()
        stat = self._stat()
        disk = parse_io(self._file("io"))
        net = parse_net_dev(self._file("net/dev"))
        memory = parse_status_rss(self._file("status"))
        return Sample(t, stat["ticks"], net, disk, memory, self._cores())

    def last_counters(self):
        """Whatever counters an exited process still shows (a zombie keeps its
        CPU time and I/O counts until it is reaped)."""
        sample = Sample(time.time_ns())
        readers = (("cpu_ticks", lambda: self._last_stat_ticks()),
                   ("disk", lambda: parse_io(_read(f"/proc/{self.pid}/io"))))
        for name, reader in readers:
            try:
                setattr(sample, name, reader())
            except (OSError, ValueError, IndexError, KeyError):
                pass
        return sample

    def _last_stat_ticks(self):
        stat = parse_pid_stat(_read(f"/proc/{self.pid}/stat"))
        if stat["start"] != self.start:
            raise ValueError("another process")
        return stat["ticks"]


class HostSampler:
    """Readings of the whole machine."""

    label = "this host"

    def __init__(self):
        self.cores = (os.cpu_count() or 1) * MICRO

    def gauges(self):
        t = time.time_ns()
        return t, parse_meminfo(_read("/proc/meminfo")), self.cores

    def sample(self):
        t = time.time_ns()
        return Sample(t, parse_proc_stat(_read("/proc/stat")), parse_net_dev(_read("/proc/net/dev")),
                      parse_diskstats(_read("/proc/diskstats"), whole_disks()),
                      parse_meminfo(_read("/proc/meminfo")), self.cores)

    def last_counters(self):
        return Sample(time.time_ns())


# ---------------------------------------------------------------- the server

class Unreachable(Exception):
    pass


class Api:
    def __init__(self, url, key, timeout=HTTP_TIMEOUT):
        self.url = url.rstrip("/")
        self.key = key
        self.timeout = timeout

    def request(self, method, path, body=None, timeout=None):
        """(status, parsed JSON body or None); raises Unreachable when no HTTP answer came."""
        data = encode_json(body).encode("utf-8") if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.key}")
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=timeout or self.timeout) as response:
                return response.status, self._json(response.read())
        except urllib.error.HTTPError as exc:
            try:
                payload = exc.read()
            except (OSError, http.client.HTTPException):
                payload = b""
            return exc.code, self._json(payload)
        except urllib.error.URLError as exc:
            raise Unreachable(str(exc.reason)) from None
        except (OSError, http.client.HTTPException) as exc:
            raise Unreachable(str(exc) or type(exc).__name__) from None

    @staticmethod
    def _json(payload):
        try:
            return decode_json(payload) if payload else None
        except ValueError:
            return None


class Fatal(Exception):
    """Stop with this message (exit 2): bad key, missing meters, unknown customer."""


def check_server(api, customer):
    """Before collecting: the key works and may post events, the customer and
    the five meters exist. Raises Fatal or Unreachable."""
    status, body = api.request("GET", "/v1/auth/me")
    if status == 401:
        raise Fatal(f"the server refused the API key ({error_text(status, body)}); check --key")
    if status != 200:
        raise Fatal(f"cannot check the API key: {error_text(status, body)}")
    role = (body or {}).get("role")
    if role not in EVENT_ROLES:
        raise Fatal(f"this API key (role {role}) may not post events; use an ingest, admin or customer key")
    if role == "customer" and isinstance(customer, int) and body.get("customer_id") != customer:
        raise Fatal(f"this API key belongs to customer {body.get('customer_id')}, not {customer}")
    if role == "ingest":
        return  # may not read meters: a missing meter shows in the first batch answer instead
    if isinstance(customer, int):
        status, body = api.request("GET", f"/v1/customers/{customer}")
        if status == 404:
            raise Fatal(f"customer {customer} does not exist on {api.url}")
        if status == 200 and (body or {}).get("archived"):
            raise Fatal(f"customer {customer} is archived; it cannot receive events")
    missing = []
    for key in METRICS:
        status, body = api.request("GET", f"/v1/meters/{key}")
        if status == 404:
            missing.append(key)
        elif status != 200:
            raise Fatal(f"cannot read meter {key}: {error_text(status, body)}")
    if missing:
        raise Fatal(missing_meters_message(missing, api.url))


def missing_meters_message(missing, url):
    return (f"meter{'s' if len(missing) > 1 else ''} missing on the server: {', '.join(sorted(missing))}.\n"
            f"Create the five collector meters once, with an admin key:\n  {setup_command(url)}")


def run_setup(api, out, err):
    """--setup: create the missing meters (sum, grouped by service and host)."""
    created = 0
    try:
        for key in METRICS:
            name, unit = METERS[key]
            status, body = api.request("GET", f"/v1/meters/{key}")
            if status == 401:
                print(f"{PROG}: the server refused the API key ({error_text(status, body)}); check --key",
                      file=err)
                return EXIT_USAGE
            if status == 403:
                print(f"{PROG}: --setup needs an admin API key ({error_text(status, body)})", file=err)
                return EXIT_USAGE
            if status == 200:
                message = f"meter {key}: exists"
                if body.get("aggregation") != "sum":
                    print(f"{PROG}: WARNING: meter {key} aggregates with {body.get('aggregation')!r}, not 'sum';"
                          " the collector's events need 'sum'", file=err)
                wanted = list(body.get("group_by") or [])
                added = [g for g in GROUP_BY if g not in wanted]
                if added:
                    status, body = api.request("PATCH", f"/v1/meters/{key}", {"group_by": wanted + added})
                    if status != 200:
                        print(f"{PROG}: cannot add group_by {added} to meter {key}: {error_text(status, body)}",
                              file=err)
                        return EXIT_FAILED
                    message += f" (added group_by {', '.join(added)})"
                print(message, file=out, flush=True)
                continue
            if status != 404:
                print(f"{PROG}: cannot read meter {key}: {error_text(status, body)}", file=err)
                return EXIT_FAILED
            status, body = api.request("POST", "/v1/meters", {"key": key, "name": name, "unit": unit,
                                                              "aggregation": "sum", "group_by": GROUP_BY})
            if status == 201:
                created += 1
                print(f"meter {key}: created ({unit}, sum, grouped by {', '.join(GROUP_BY)})", file=out, flush=True)
            elif status == 409:
                print(f"meter {key}: exists", file=out, flush=True)
            elif status == 403:
                print(f"{PROG}: --setup needs an admin API key ({error_text(status, body)})", file=err)
                return EXIT_USAGE
            else:
                print(f"{PROG}: cannot create meter {key}: {error_text(status, body)}", file=err)
                return EXIT_FAILED
    except Unreachable as exc:
        print(f"{PROG}: cannot reach {api.url}: {exc}", file=err)
        return EXIT_FAILED
    print(f"setup done: {created} meter{'s' if created != 1 else ''} created, {len(METRICS) - created} already there",
          file=out, flush=True)
    return EXIT_OK


# ---------------------------------------------------------------- spool and delivery

class Spool:
    """The events not yet delivered, as one JSON file replaced atomically
    (written to a temporary file in the same folder, fsynced, renamed).
    An empty outbox removes the file. A lock file keeps a second collector
    off the same spool."""

    FORMAT = "meterline-collect-spool"

    def __init__(self, path):
        self.path = os.path.abspath(os.path.expanduser(path))
        self._lock_file = None

    def lock(self):
        folder = os.path.dirname(self.path)
        os.makedirs(folder, exist_ok=True)
        handle = open(self.path + ".lock", "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        self._lock_file = handle
        return True

    def load(self, err):
        try:
            text = _read_utf8(self.path)
        except FileNotFoundError:
            return []
        try:
            data = decode_json(text)
            events = data["events"]
            if data.get("format") != self.FORMAT or not isinstance(events, list):
                raise ValueError("not a collector spool")
            return events
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            aside = f"{self.path}.unreadable-{int(time.time())}"
            os.replace(self.path, aside)
            print(f"{PROG}: WARNING: spool {self.path} is unreadable ({exc}); moved aside to {aside}", file=err)
            return []

    def save(self, events):
        if not events:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            return
        folder = os.path.dirname(self.path)
        text = encode_json({"format": self.FORMAT, "version": 1, "events": events})
        fd, temp = tempfile.mkstemp(prefix=os.path.basename(self.path) + ".", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, self.path)
        except BaseException:
            try:
                os.unlink(temp)
            except OSError:
                pass
            raise
        try:
            dir_fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError:
            pass


def _read_utf8(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


class Outbox:
    """Events waiting for the server, oldest first, in memory; the spool holds
    a copy whenever a delivery did not get everything through. The sampling
    loop appends (memory only, so a slow disk never delays a sample); one
    delivery at a time removes from the front and then writes the spool."""

    def __init__(self, spool, events):
        self.spool = spool
        self.events = list(events)
        self.lock = threading.Lock()
        self.write_lock = threading.Lock()

    def add(self, events):
        with self.lock:
            self.events.extend(events)

    def front(self, n=MAX_BATCH):
        with self.lock:
            return list(self.events[:n])

    def replace_front(self, n, keep):
        with self.lock:
            self.events[:n] = keep

    def persist(self):
        """Write what is waiting to the spool (remove it when nothing is)."""
        with self.write_lock:
            with self.lock:
                events = list(self.events)
            self.spool.save(events)

    def __len__(self):
        with self.lock:
            return len(self.events)


class Delivery:
    """Sends the outbox oldest first in batches of at most MAX_BATCH events.
    Unreachable, 5xx or 429: keep everything and retry later. Other 4xx: say
    so loudly on stderr and drop the refused events (the rest of the batch is
    sent again). 401/403 and unknown meters are fatal (the spool is kept)."""

    def __init__(self, api, outbox, customer, url, interval, err, checked):
        self.api = api
        self.outbox = outbox
        self.customer = customer
        self.url = url
        self.interval = interval
        self.err = err
        self.checked = checked
        self.down_since = None
        self.delivered_since_down = 0
        self.fatal = None
        self.lock = threading.Lock()

    def _went_down(self, reason):
        if self.down_since is None:
            self.down_since = time.time()
            self.delivered_since_down = 0
            print(f"{PROG}: server unreachable ({reason}); keeping {len(self.outbox)} events in memory and in "
                  f"{self.outbox.spool.path}, retrying every {self.interval} s", file=self.err, flush=True)

    def _came_back(self):
        if self.down_since is not None:
            print(f"{PROG}: server reachable again after {time.time() - self.down_since:.0f} s; delivered "
                  f"{self.delivered_since_down} held-back events", file=self.err, flush=True)
            self.down_since = None

    def deliver(self, timeout=None):
        """Send what is waiting. Returns "ok" (outbox empty), "retry" or "fatal"."""
        if not self.lock.acquire(timeout=-1 if timeout is None else timeout):
            return "retry"
        try:
            return self._deliver()
        finally:
            try:
                self.outbox.persist()
            finally:
                self.lock.release()

    def _deliver(self):
        if self.fatal:
            return "fatal"
        while True:
            batch = self.outbox.front()
            if not batch:
                return "ok"
            try:
                if not self.checked:
                    check_server(self.api, self.customer)
                    self.checked = True
                body = {"events": batch}
                if isinstance(self.customer, int):
                    body = {"customer_id": self.customer, "events": batch}
                status, answer = self.api.request("POST", "/v1/events/batch", body)
            except Unreachable as exc:
                self._went_down(exc)
                return "retry"
            except Fatal as exc:
                self.fatal = str(exc)
                return "fatal"
            if status == 200:
                self.outbox.replace_front(len(batch), [])
                if self.down_since is not None:
                    self.delivered_since_down += len(batch)
                    if len(self.outbox) == 0:
                        self._came_back()
                continue
            if status == 429 or status >= 500:
                self._went_down(error_text(status, answer))
                return "retry"
            if status == 401:
                self.fatal = f"the server refused the API key ({error_text(status, answer)}); check --key"
                return "fatal"
            if status == 403:
                self.fatal = f"this API key may not post these events ({error_text(status, answer)})"
                return "fatal"
            missing = unknown_meters(answer) if status == 400 else set()
            if missing:
                self.fatal = missing_meters_message(missing, self.url)
                return "fatal"
            bad = failed_indexes(answer, len(batch)) if status == 400 else None
            if bad is None:
                bad = set(range(len(batch)))
            print(f"{PROG}: ERROR: the server refused {len(bad)} of {len(batch)} events and they are DROPPED: "
                  f"{error_text(status, answer)}", file=self.err, flush=True)
            self.outbox.replace_front(len(batch), [e for i, e in enumerate(batch) if i not in bad])


# ---------------------------------------------------------------- the loop

class Collector:
    def __init__(self, args, sampler, delivery, outbox, out, err):
        self.args = args
        self.interval = args.interval
        self.sampler = sampler
        self.delivery = delivery
        self.outbox = outbox
        self.out = out
        self.err = err
        self.host = socket.gethostname()
        self.clk_tck = os.sysconf("SC_CLK_TCK")
        self.memory = Integral()
        self.cores = Integral()
        self.stopping = threading.Event()
        self.wake = threading.Event()
        self.gauge_step = max(0.5, min(5.0, self.interval / 2))  # gauges are sampled this often

    # -- helpers
    def _sleep_until(self, t):
        while not self.stopping.is_set() and not self.delivery.fatal:
            left = t - time.time()
            if left <= 0:
                return
            time.sleep(min(left, 0.2))

    def _gauges(self, t, memory, cores):
        self.memory.add(t, memory)
        self.cores.add(t, cores)

    def _window(self, previous, current, last_cores):
        start = window_start_ns(previous.t_ns, self.interval)
        micros = window_quantities(previous, current, self.clk_tck, self.memory.take(), self.cores.take())
        cores = current.cores if current.cores is not None else last_cores
        events = build_events(micros, start, self.args.service, self.host, cores, self.args.customer)
        for metric, counter in (("cpu_core_seconds", "cpu_ticks"), ("network_bytes", "net"), ("disk_bytes", "disk")):
            if micros[metric] is None and getattr(previous, counter) is not None \
                    and getattr(current, counter) is not None:
                print(f"{PROG}: {metric} went backwards (counter reset): new baseline, nothing sent for the "
                      f"window at {rfc3339(start)}", file=self.err, flush=True)
        if events:
            self.outbox.add(events)
        return events

    def _sender(self):
        while not self.stopping.is_set():
            self.wake.wait()
            self.wake.clear()
            if self.stopping.is_set():
                return
            if self.delivery.deliver() == "fatal":
                return

    # -- the run
    def run(self):
        try:
            previous = self.sampler.sample()
        except ProcessGone as exc:
            print(f"{PROG}: {exc}", file=self.err)
            return EXIT_FAILED
        self._gauges(previous.t_ns, previous.memory, previous.cores)
        last_cores = previous.cores
        once = self.args.once
        if once:
            end_ns = previous.t_ns + self.interval * NS
        else:
            end_ns = (window_start_ns(previous.t_ns, self.interval) + self.interval) * NS
        cores_text = format_number(quantity(previous.cores))
        print(f"collecting {self.sampler.label} as service {self.args.service!r} (cores {cores_text}) every "
              f"{self.interval} s for customer {self.args.customer} at {self.delivery.url}; "
              f"spool {self.outbox.spool.path}", file=self.out, flush=True)
        sender = None
        if not once:
            sender = threading.Thread(target=self._sender, name="collect-sender", daemon=True)
            sender.start()
            if len(self.outbox):
                self.wake.set()  # a spool from an earlier run goes first
        while True:
            self._sleep_until(min(end_ns / NS, time.time() + self.gauge_step))
            if self.delivery.fatal:
                return self._fatal(sender)
            if self.stopping.is_set():
                return self._stop(sender)
            now_ns = time.time_ns()
            try:
                if now_ns < end_ns:
                    t, memory, cores = self.sampler.gauges()
                    self._gauges(t, memory, cores)
                    last_cores = cores if cores is not None else last_cores
                    continue
                current = self.sampler.sample()
            except ProcessGone as exc:
                return self._gone(exc, previous, last_cores, sender)
            if not once and current.t_ns - end_ns < self.interval * NS:
                current.t_ns = end_ns  # on time: the window ends on its boundary
            self._gauges(current.t_ns, current.memory, current.cores)
            last_cores = current.cores if current.cores is not None else last_cores
            events = self._window(previous, current, last_cores)
            previous = current
            if once:
                return self._finish_once(events)
            self.wake.set()
            end_ns = (window_start_ns(max(current.t_ns, now_ns), self.interval) + self.interval) * NS
            if end_ns <= current.t_ns:
                end_ns += self.interval * NS

    def _stop_sender(self, sender):
        self.stopping.set()
        self.wake.set()
        if sender is not None:
            sender.join(timeout=HTTP_TIMEOUT + 2)

    def _report_kept(self):
        self.outbox.persist()
        kept = len(self.outbox)
        if kept:
            print(f"{PROG}: {kept} events not delivered are kept in {self.outbox.spool.path}; a collector "
                  f"started with the same --spool sends them", file=self.err, flush=True)
        return kept

    def _finish_once(self, events):
        result = self.delivery.deliver()
        if result == "fatal":
            print(f"{PROG}: {self.delivery.fatal}", file=self.err, flush=True)
            return EXIT_USAGE
        if result != "ok":
            self._report_kept()
            print(f"{PROG}: could not deliver the window", file=self.err, flush=True)
            return EXIT_FAILED
        print(f"posted the window at {events[0]['timestamp']} ({len(events)} events)", file=self.out, flush=True)
        return EXIT_OK

    def _fatal(self, sender):
        self._stop_sender(sender)
        print(f"{PROG}: {self.delivery.fatal}", file=self.err, flush=True)
        self._report_kept()
        return EXIT_USAGE

    def _stop(self, sender):
        self._stop_sender(sender)
        self.delivery.deliver(timeout=1.0)
        self._report_kept()
        print("collector stopped", file=self.out, flush=True)
        return EXIT_OK

    def _gone(self, exc, previous, last_cores, sender):
        final = self.sampler.last_counters()
        self._window(previous, final, last_cores)
        self._stop_sender(sender)
        result = self.delivery.deliver(timeout=HTTP_TIMEOUT)
        if result == "fatal":
            print(f"{PROG}: {self.delivery.fatal}", file=self.err, flush=True)
        kept = self._report_kept()
        print(f"{PROG}: {exc}; stopping after {'keeping' if kept else 'sending'} what was collected",
              file=self.err, flush=True)
        return EXIT_FAILED


# ---------------------------------------------------------------- command line

def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1 or more")
    return value


def _interval(text):
    value = _positive_int(text)
    if value > 86_400:
        raise argparse.ArgumentTypeError("at most 86400 seconds (one day)")
    return value


def _customer(text):
    text = text.strip()
    if text.isdigit():
        if int(text) < 1:
            raise argparse.ArgumentTypeError("a customer id is 1 or more")
        return int(text)
    if not text or len(text) > 255:
        raise argparse.ArgumentTypeError("a customer id (integer) or external id (text, max 255)")
    return text


def _service(text):
    if not SERVICE_PATTERN.match(text):
        raise argparse.ArgumentTypeError(
            f"{text!r}: letters, digits, '_', '.', ':', '@', '-' (max 100), starting with a letter or digit")
    return text


def _url(text):
    parsed = urllib.parse.urlsplit(text)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise argparse.ArgumentTypeError(f"{text!r} is not an http:// or https:// URL")
    return text.rstrip("/")


def build_parser():
    parser = argparse.ArgumentParser(
        prog=PROG,
        usage=f"{PROG} --url URL --key KEY --customer ID --service NAME [--pid N | --host] [--interval 30] "
              "[--once] [--setup] [--spool PATH]",
        description="Sample /proc every interval and post CPU, allocated CPU, memory, network and disk usage "
                    "to a Meterline server as events of five meters (cpu_core_seconds, "
                    "cpu_allocated_core_seconds, memory_gb_seconds, network_bytes, disk_bytes).",
        epilog="Exit status: 0 done (--once delivered, --setup done, stopped by SIGTERM/SIGINT); 1 could not "
               "deliver (--once), the --pid process exited, or the server is unreachable for --setup; "
               "2 bad arguments, a refused key, a missing meter or an unknown customer.")
    parser.add_argument("--url", type=_url, required=True, help="the Meterline server, e.g. http://127.0.0.1:8000")
    parser.add_argument("--key", default=None,
                        help="API key (ingest, admin or customer role; admin for --setup); "
                             "default $METERLINE_KEY")
    parser.add_argument("--customer", type=_customer, metavar="ID",
                        help="the customer billed: id, or external id")
    parser.add_argument("--service", type=_service, metavar="NAME",
                        help="service name: the events' 'service' property and id prefix; unique per collector")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--pid", type=_positive_int, metavar="N", help="measure this process (its threads, "
                        "not its children)")
    target.add_argument("--host", action="store_true", help="measure the whole machine (the default)")
    parser.add_argument("--interval", type=_interval, default=30, metavar="SECONDS",
                        help="window length in whole seconds; windows align to multiples of it (default 30)")
    parser.add_argument("--once", action="store_true", help="baseline, wait one interval, post that window, exit")
    parser.add_argument("--setup", action="store_true", help="create the five meters if missing (admin key), exit")
    parser.add_argument("--spool", metavar="PATH",
                        help="file keeping undelivered events (default ~/.meterline-collect-<service>.spool)")
    return parser


def parse_args(argv, environ=None):
    environ = os.environ if environ is None else environ
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.key is None:
        args.key = environ.get("METERLINE_KEY") or None
    if not args.key:
        parser.error("--key is required (or set METERLINE_KEY)")
    if args.setup:
        if args.once:
            parser.error("--setup and --once do not go together (--setup only creates the meters)")
        return args
    missing = [name for name in ("customer", "service") if getattr(args, name) is None]
    if missing:
        parser.error("the following arguments are required: " + ", ".join("--" + m for m in missing))
    if args.pid is not None and not os.path.exists(f"/proc/{args.pid}"):
        parser.error(f"--pid {args.pid}: no such process")
    if args.spool is None:
        args.spool = os.path.join(os.path.expanduser("~"), f".meterline-collect-{args.service}.spool")
    return args


def main(argv=None, out=None, err=None):
    out = out or sys.stdout
    err = err or sys.stderr
    args = parse_args(sys.argv[1:] if argv is None else argv)
    api = Api(args.url, args.key)
    if args.setup:
        return run_setup(api, out, err)
    spool = Spool(args.spool)
    try:
        if not spool.lock():
            print(f"{PROG}: another collector is using the spool {spool.path}; give this one its own --spool",
                  file=err)
            return EXIT_USAGE
    except OSError as exc:
        print(f"{PROG}: cannot use the spool {spool.path}: {exc}", file=err)
        return EXIT_USAGE
    try:
        sampler = PidSampler(args.pid) if args.pid is not None else HostSampler()
    except ProcessGone as exc:
        print(f"{PROG}: {exc}", file=err)
        return EXIT_USAGE
    except PermissionError as exc:
        print(f"{PROG}: cannot read /proc/{args.pid} ({exc.strerror}); run the collector as the process's "
              "user or as root", file=err)
        return EXIT_USAGE
    checked = False
    try:
        check_server(api, args.customer)
        checked = True
    except Fatal as exc:
        print(f"{PROG}: {exc}", file=err)
        return EXIT_USAGE
    except Unreachable as exc:
        print(f"{PROG}: server {args.url} unreachable ({exc}); collecting anyway, samples are kept in "
              f"{spool.path} until it answers", file=err, flush=True)
    outbox = Outbox(spool, spool.load(err))
    if len(outbox):
        print(f"{PROG}: {len(outbox)} events from an earlier run are in the spool; sending them first",
              file=err, flush=True)
    delivery = Delivery(api, outbox, args.customer, args.url, args.interval, err, checked)
    collector = Collector(args, sampler, delivery, outbox, out, err)

    def stop(signum, frame):
        collector.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    return collector.run()


if __name__ == "__main__":
    sys.exit(main())
