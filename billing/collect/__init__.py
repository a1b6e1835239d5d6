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

Standard library only. The package's modules, dependencies one-way:

    constants   what is measured, limits, exit codes (pure)
    procfs      parsers of /proc, /sys and cgroup text; cores (pure)
    quantities  deltas, counter resets, windows, ids, exact quantities, JSON (pure)
    answers     the server's error answers and messages made from them (pure)
    samplers    reading /proc: PidSampler, HostSampler
    api         requests to the server, the check before collecting, --setup
    spool       the spool file and the in-memory outbox
    delivery    sending the outbox in batches, retries
    collector   the sampling loop
    cli         arguments and main(); __main__ runs it

The pure parts are plain functions, tested with fixture text in
tests/test_collector.py. The names below are re-exported for callers of
`billing.collect`.
"""

from .answers import error_text, failed_indexes, missing_meters_message, setup_command, unknown_meters
from .api import Api, Fatal, Unreachable, check_server, run_setup
from .cli import build_parser, main, parse_args
from .collector import Collector
from .constants import (EVENT_ROLES, EXIT_FAILED, EXIT_OK, EXIT_USAGE, GROUP_BY, HTTP_TIMEOUT, MAX_BATCH, METERS,
                        METRICS, MICRO, NS, PROG, SECTOR, SERVICE_PATTERN)
from .delivery import Delivery
from .procfs import (cores_micros, cpu_cgroup_dirs, parse_cfs, parse_cpu_max, parse_diskstats, parse_io, parse_meminfo,
                     parse_net_dev, parse_pid_stat, parse_proc_cgroup, parse_proc_stat, parse_status_rss)
from .quantities import (Integral, Sample, build_events, counter_delta, customer_field, decode_json, encode_json,
                         event_id, format_number, quantity, ratio_micros, rfc3339, to_quantity, window_quantities,
                         window_start, window_start_ns)
from .samplers import HostSampler, PidSampler, ProcessGone, cgroup_quota, whole_disks
from .spool import Outbox, Spool

__all__ = [
    "EVENT_ROLES", "EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "GROUP_BY", "HTTP_TIMEOUT", "MAX_BATCH", "METERS", "METRICS",
    "MICRO", "NS", "PROG", "SECTOR", "SERVICE_PATTERN",
    "cores_micros", "cpu_cgroup_dirs", "parse_cfs", "parse_cpu_max", "parse_diskstats", "parse_io", "parse_meminfo",
    "parse_net_dev", "parse_pid_stat", "parse_proc_cgroup", "parse_proc_stat", "parse_status_rss",
    "Integral", "Sample", "build_events", "counter_delta", "customer_field", "decode_json", "encode_json", "event_id",
    "format_number", "quantity", "ratio_micros", "rfc3339", "to_quantity", "window_quantities", "window_start",
    "window_start_ns",
    "error_text", "failed_indexes", "missing_meters_message", "setup_command", "unknown_meters",
    "HostSampler", "PidSampler", "ProcessGone", "cgroup_quota", "whole_disks",
    "Api", "Fatal", "Unreachable", "check_server", "run_setup",
    "Outbox", "Spool", "Delivery", "Collector", "build_parser", "main", "parse_args",
]
