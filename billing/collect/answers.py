"""Pure reading of the server's error answers, and the messages made from them."""

import re

from .constants import PROG


def failed_indexes(error_body, size):
    """The batch indexes a 400 answer names, or None when it names none."""
    details = ((error_body or {}).get("error") or {}).get("details") or []
    indexes = {d.get("index") for d in details if isinstance(d, dict)}
    indexes.discard(None)
    if not indexes or not all(isinstance(i, int) and 0 <= i < size for i in indexes):
        return None
    return indexes


def unknown_meters(error_body):
    """Meter keys a 400 answer calls unknown."""
    details = ((error_body or {}).get("error") or {}).get("details") or []
    found = set()
    for detail in details:
        if isinstance(detail, dict) and detail.get("field") == "meter":
            match = re.match(r"unknown meter '([^']+)'", str(detail.get("message", "")))
            if match:
                found.add(match.group(1))
    return found


def error_text(status, body):
    """A readable one-line account of an error answer."""
    error = (body or {}).get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return f"HTTP {status}"
    text = f"HTTP {status} {error.get('code', '')}: {error.get('message', '')}".rstrip(": ")
    details = error.get("details") or []
    parts = []
    for detail in details[:5]:
        if isinstance(detail, dict):
            where = ".".join(str(detail[k]) for k in ("index", "field") if detail.get(k) is not None)
            parts.append(f"{where}: {detail.get('message', '')}" if where else str(detail.get("message", "")))
    if parts:
        text += " (" + "; ".join(parts) + (f"; and {len(details) - 5} more" if len(details) > 5 else "") + ")"
    return text


def setup_command(url):
    return f"{PROG} --url {url} --key <ADMIN_KEY> --setup"


def missing_meters_message(missing, url):
    return (f"meter{'s' if len(missing) > 1 else ''} missing on the server: {', '.join(sorted(missing))}.\n"
            f"Create the five collector meters once, with an admin key:\n  {setup_command(url)}")
