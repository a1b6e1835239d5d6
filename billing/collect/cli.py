"""The command line: arguments, the checks before collecting, and main()."""

import argparse
import os
import signal
import sys
import urllib.parse

from .api import Api, Fatal, Unreachable, check_server, run_setup
from .collector import Collector
from .constants import EXIT_USAGE, PROG, SERVICE_PATTERN
from .delivery import Delivery
from .samplers import HostSampler, PidSampler, ProcessGone
from .spool import Outbox, Spool


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
