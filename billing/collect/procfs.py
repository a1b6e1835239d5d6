"""Pure parsers of /proc, /sys and cgroup text, and the cores a process may use.

Plain functions of text, tested with fixture text; reading the files is in samplers.py.
"""

import os
import re
from decimal import ROUND_HALF_UP, Decimal

from .constants import MICRO, SECTOR

# proc(5) field numbers: /proc/<pid>/stat (1-based; the fields after the command
# name start at 3), /proc/net/dev (0-based after "interface:"), /proc/diskstats (0-based)
STAT_STATE, STAT_UTIME, STAT_STIME, STAT_STARTTIME = 3, 14, 15, 22
NET_RX_BYTES, NET_TX_BYTES = 0, 8
DISK_NAME, DISK_SECTORS_READ, DISK_SECTORS_WRITTEN = 2, 5, 9


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

    def field(number):
        return rest[number - STAT_STATE]
    return {"state": field(STAT_STATE), "ticks": int(field(STAT_UTIME)) + int(field(STAT_STIME)),
            "start": int(field(STAT_STARTTIME))}


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
    number, unit = fields[0], fields[1:2]
    return int(number) * (1024 if unit == ["kB"] else 1)


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
        counters[name] = int(fields[NET_RX_BYTES]) + int(fields[NET_TX_BYTES])
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
        name = fields[DISK_NAME]
        if whole_disks is not None:
            if name not in whole_disks:
                continue
        elif _VIRTUAL_DISK.match(name) or _PARTITION.match(name):
            continue
        counters[name] = (int(fields[DISK_SECTORS_READ]) + int(fields[DISK_SECTORS_WRITTEN])) * SECTOR
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
        _mount_id, _parent_id, _device, root, mount = fields[:5]
        root, mount = _unescape_mount(root), _unescape_mount(mount)
        fstype, _source, superopts = tail[:3]
        superopts = superopts.split(",")
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


def cores_micros(affinity_count, quota=None):
    """The cores a process may use, in millionths: its affinity count, lowered
    to the cgroup quota (a Decimal of cores) when one is set."""
    cores = affinity_count * MICRO
    if quota is not None:
        limit = quota.scaleb(6).to_integral_value(rounding=ROUND_HALF_UP)
        cores = min(cores, max(int(limit), 0))
    return cores
