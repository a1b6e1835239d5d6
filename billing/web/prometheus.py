"""Prometheus text exposition (format 0.0.4), pure: counters, gauges and
histograms in memory, and the text a scrape answers.

Labels carry bounded values only (route patterns, methods, status codes):
the caller decides what goes in, this module escapes it.
"""

import threading

DEFAULT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def escape_label(value):
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def escape_help(text):
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _labels(pairs):
    if not pairs:
        return ""
    return "{" + ",".join(f'{name}="{escape_label(value)}"' for name, value in pairs) + "}"


def _number(value):
    if isinstance(value, float):
        if value == float("inf"):
            return "+Inf"
        return repr(value)
    return str(value)


class Counter:
    """A counter family keyed by label values (a tuple in `label_names` order)."""

    def __init__(self, name, help_text, label_names=()):
        self.name, self.help, self.label_names = name, help_text, tuple(label_names)
        self._values = {}
        self._lock = threading.Lock()

    def inc(self, *labels, amount=1):
        with self._lock:
            self._values[labels] = self._values.get(labels, 0) + amount

    def samples(self):
        with self._lock:
            return sorted(self._values.items())


class Histogram:
    """Observations in cumulative buckets (seconds), with sum and count."""

    def __init__(self, name, help_text, buckets=DEFAULT_BUCKETS):
        self.name, self.help = name, help_text
        self.buckets = tuple(buckets)
        self._counts = [0] * (len(self.buckets) + 1)  # the last one: above every bound
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, seconds):
        index = len(self.buckets)
        for i, bound in enumerate(self.buckets):
            if seconds <= bound:
                index = i
                break
        with self._lock:
            self._counts[index] += 1
            self._sum += seconds

    def snapshot(self):
        with self._lock:
            return list(self._counts), self._sum


def family(lines, name, kind, help_text):
    lines.append(f"# HELP {name} {escape_help(help_text)}")
    lines.append(f"# TYPE {name} {kind}")


def render_counter(lines, counter):
    family(lines, counter.name, "counter", counter.help)
    for labels, value in counter.samples():
        lines.append(f"{counter.name}{_labels(zip(counter.label_names, labels))} {_number(value)}")


def render_gauge(lines, name, help_text, values):
    """`values`: [(label pairs, number)]."""
    family(lines, name, "gauge", help_text)
    for pairs, value in values:
        lines.append(f"{name}{_labels(pairs)} {_number(value)}")


def render_histogram(lines, histogram):
    family(lines, histogram.name, "histogram", histogram.help)
    counts, total = histogram.snapshot()
    running = 0
    for bound, count in zip(histogram.buckets, counts):
        running += count
        lines.append(f'{histogram.name}_bucket{{le="{_number(float(bound))}"}} {running}')
    running += counts[-1]
    lines.append(f'{histogram.name}_bucket{{le="+Inf"}} {running}')
    lines.append(f"{histogram.name}_sum {_number(float(total))}")
    lines.append(f"{histogram.name}_count {running}")
