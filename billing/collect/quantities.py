"""Pure arithmetic of windows: counter deltas and resets, window alignment,
event ids, exact decimal quantities, the events of a window and their JSON.
"""

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal

from .constants import METRICS, MICRO, NS


def ratio_micros(numerator, denominator):
    """numerator / denominator in integer millionths, rounded half up (non-negative ints)."""
    return (2 * numerator * MICRO + denominator) // (2 * denominator)


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
        self.last_ns = None  # the last point: its time and value
        self.last_value = None
        self.doubled = 0

    def add(self, t_ns, value):
        if value is None:
            return
        if self.last_ns is not None and t_ns > self.last_ns:
            self.doubled += (self.last_value + value) * (t_ns - self.last_ns)
        if self.last_ns is None or t_ns >= self.last_ns:
            self.last_ns, self.last_value = t_ns, value

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
