"""Object storage rules (§8), pure: keys, download headers, byte ranges,
ETag matching, and stored bytes integrated over time (GB-days).

No I/O here: the HTTP handlers and the file store call these.
"""

import unicodedata
from urllib.parse import quote, unquote_to_bytes

MAX_KEY_BYTES = 512
MAX_CONTENT_TYPE = 255
DEFAULT_CONTENT_TYPE = "application/octet-stream"
GB = 10 ** 9
DAY_SECONDS = 86_400
# micros of a GB-day per byte-second: a GB-day is 10⁹ bytes kept for 86,400 s,
# whatever the local day's length, and quantities are integer millionths
_BYTE_SECONDS_PER_MICRO = GB * DAY_SECONDS // 1_000_000


class KeyError_(ValueError):
    """A key that breaks the §8 rules (→ 400)."""


def parse_key(raw):
    """The object key from the raw (percent-encoded) URL path after
    /v1/objects/: percent-decoded once as UTF-8, then checked.

    The HTTP layer reads the request target as ISO-8859-1 (one character per
    byte), so the path goes back to its bytes first: a byte a client sent
    unencoded counts as itself (a raw UTF-8 "é" is "é", a raw 0xFF is invalid
    UTF-8), exactly as its percent-encoded form would."""
    try:
        target = raw.encode("latin-1")
    except UnicodeEncodeError:  # not from the wire: text already
        target = raw.encode("utf-8")
    try:
        key = unquote_to_bytes(target).decode("utf-8")
    except UnicodeDecodeError:
        raise KeyError_("the key is not valid UTF-8 once percent-decoded") from None
    check_key(key)
    return key


def check_key(key):
    if not isinstance(key, str) or not key:
        raise KeyError_("the key must not be empty")
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise KeyError_(f"the key must be at most {MAX_KEY_BYTES} bytes (UTF-8)")
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in key):
        raise KeyError_("the key must not contain NUL or control characters")
    if key.startswith("/"):
        raise KeyError_("the key must not start with '/'")
    if ".." in key.split("/"):
        raise KeyError_("the key must not have a '..' segment")
    return key


def check_content_type(value):
    """The Content-Type to store for an upload (None → the default)."""
    if value is None or not value.strip():
        return DEFAULT_CONTENT_TYPE
    value = value.strip()
    if len(value) > MAX_CONTENT_TYPE or any(ord(ch) < 32 or ord(ch) > 126 for ch in value) \
            or "/" not in value.split(";")[0]:
        raise ValueError("Content-Type must be a media type like text/plain (printable ASCII, at most 255)")
    return value


def content_disposition(key):
    """`attachment` with the key's last segment as the file name (RFC 6266:
    an ASCII fallback plus `filename*` in UTF-8 when it is not plain ASCII)."""
    name = key.rsplit("/", 1)[-1] or "download"
    fallback = "".join(ch if 32 <= ord(ch) < 127 and ch not in '"\\' else "_" for ch in name)
    header = f'attachment; filename="{fallback}"'
    if fallback != name:
        header += "; filename*=UTF-8''" + quote(name, safe="")
    return header


def quoted_etag(etag):
    return f'"{etag}"'


def etag_matches(header, etag):
    """If-None-Match: `*` or any listed (weak or strong) tag equal to ours."""
    for part in header.split(","):
        tag = part.strip()
        if tag == "*":
            return True
        if tag.startswith("W/"):
            tag = tag[2:]
        if tag.strip('"') == etag:
            return True
    return False


class RangeNotSatisfiable(ValueError):
    pass


def parse_range(header, size):
    """(start, end_inclusive) for a single `bytes=` range, or None to send the
    whole object (no header, another unit, or several ranges). Raises
    RangeNotSatisfiable when no byte of the object is asked for."""
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None  # unsupported forms are ignored (RFC 9110 §14.2)
    first, dash, last = spec.strip().partition("-")
    if not dash or not (first.isdigit() or first == "") or not (last.isdigit() or last == "") \
            or (first == "" and last == ""):
        return None  # malformed: ignored, the whole object is sent
    if first == "":  # bytes=-n: the last n bytes
        n = int(last)
        if n == 0 or size == 0:
            raise RangeNotSatisfiable()
        return max(0, size - n), size - 1
    start = int(first)
    if start >= size:
        raise RangeNotSatisfiable()
    end = size - 1 if last == "" else min(int(last), size - 1)
    if end < start:
        return None  # a syntactically invalid range is ignored
    return start, end


# -- GB-days -----------------------------------------------------------------

def byte_seconds(spans, start_s, end_s, now_s):
    """Bytes × seconds stored in [start_s, end_s): `spans` are (size, from_s,
    until_s or None while stored); time after `now_s` has not happened yet."""
    total = 0
    end_s = min(end_s, now_s)
    for size, span_start, span_end in spans:
        lo = max(span_start, start_s)
        hi = end_s if span_end is None else min(span_end, end_s)
        if hi > lo:
            total += size * (hi - lo)
    return total


def gb_day_micros(byte_secs):
    """Byte-seconds as GB-days in integer millionths, rounded half-up."""
    return (2 * byte_secs + _BYTE_SECONDS_PER_MICRO) // (2 * _BYTE_SECONDS_PER_MICRO)
