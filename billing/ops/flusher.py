"""The background flusher: writes what the in-memory meters counted (storage
API reads, self-metered requests) every few seconds, and once more at stop,
so no request pays for a write transaction of its own."""

import threading

INTERVAL_SECONDS = 5  # §8 and §10 ask for at least every 10 s


class Flusher:
    def __init__(self, app, meters, interval=INTERVAL_SECONDS):
        self.app = app
        self.meters = meters  # objects with flush() → count written
        self.interval = interval
        self._stop = threading.Event()
        self._thread = None

    def flush(self):
        """Flush every meter now; {meter class name: written}. One failing
        meter does not keep the others from writing."""
        written = {}
        for meter in self.meters:
            try:
                written[type(meter).__name__] = meter.flush()
            except Exception as exc:
                self.app.log_exception("flusher", exc)
        return written

    def start(self):
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="flusher", daemon=True)
        self._thread.start()

    def _loop(self):
        while not self._stop.wait(self.interval):
            self.flush()

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.flush()
