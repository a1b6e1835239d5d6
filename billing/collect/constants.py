"""What the collector measures and its fixed settings (no I/O)."""

import re


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
