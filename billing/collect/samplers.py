"""Reading /proc and /sys: the samplers of one process (--pid) and of the whole machine (--host)."""

import os
import time

from .constants import MICRO
from .procfs import (cores_micros, cpu_cgroup_dirs, parse_cfs, parse_cpu_max, parse_diskstats, parse_io,
                     parse_meminfo, parse_net_dev, parse_pid_stat, parse_proc_stat, parse_status_rss)
from .quantities import Sample


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
