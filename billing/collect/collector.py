"""The sampling loop: gauges between windows, one window per interval, a sender thread."""

import os
import socket
import threading
import time

from .constants import EXIT_FAILED, EXIT_OK, EXIT_USAGE, HTTP_TIMEOUT, NS, PROG
from .quantities import Integral, build_events, format_number, quantity, rfc3339, window_quantities, window_start_ns
from .samplers import ProcessGone


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
