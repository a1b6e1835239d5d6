#!/usr/bin/env python3
"""Run server.py with a cProfile of every request thread (for bench/ingest.py --profile-dir).

    python3 bench/profserver.py OUT.prof [server.py arguments...]

`python3 -m cProfile server.py` only sees the main thread, which just runs the
accept loop; the work happens in the per-connection threads of
ThreadingHTTPServer. This wraps each of those threads in its own
cProfile.Profile and merges them into OUT.prof when the server stops (SIGTERM).

MLB_PROFILE_CLOCK=cpu profiles with time.thread_time (CPU time of each thread:
lock waits, GIL waits and idle keep-alive reads are then not counted); the
default is wall time (time.perf_counter), where waiting shows up as time.
Inspect with pstats, e.g.
    python3 -c "import pstats; pstats.Stats('OUT.prof').sort_stats('tottime').print_stats(30)"
"""

import cProfile
import os
import pstats
import socketserver
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

_profiles = []
_lock = threading.Lock()
_original = socketserver.ThreadingMixIn.process_request_thread
_timer = time.thread_time if os.environ.get("MLB_PROFILE_CLOCK") == "cpu" else None


def _profiled(self, request, client_address):
    profile = cProfile.Profile(_timer) if _timer else cProfile.Profile()
    with _lock:
        _profiles.append(profile)
    profile.enable()
    try:
        _original(self, request, client_address)
    finally:
        profile.disable()


def main():
    out = sys.argv[1]
    socketserver.ThreadingMixIn.process_request_thread = _profiled
    import server  # noqa: E402  (after the patch)
    rc = server.main(sys.argv[2:])
    stats = None
    with _lock:
        profiles = list(_profiles)
    for profile in profiles:
        try:
            profile.disable()
        except Exception:
            pass
        if stats is None:
            stats = pstats.Stats(profile)
        else:
            stats.add(profile)
    if stats is not None:
        stats.dump_stats(out)
        print(f"profile of {len(profiles)} request threads written to {out}", flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
