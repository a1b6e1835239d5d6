"""JSON without binary floating point.

Numbers with a fraction or exponent parse as `Decimal`; `NaN`/`Infinity` are
refused. Encoding writes `Decimal` as a plain JSON number (never an exponent),
so quantities survive a round trip exactly.
"""

import json
import re
from decimal import Decimal, DecimalException

from . import errors

_encode_string = json.encoder.encode_basestring_ascii


class JSONDecodeError(ValueError):
    pass


def _no_constants(name):
    raise JSONDecodeError(f"{name} is not allowed in JSON")


MAX_EXPONENT = 1000  # |exponent| beyond this is refused: 1e999999999 would expand to a billion digits
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _parse_number(text):
    value = Decimal(text)
    if not -MAX_EXPONENT <= value.adjusted() <= MAX_EXPONENT:
        raise JSONDecodeError(f"number {text[:40]} is out of range")
    return value


def _check_strings(value):
    """Refuse escaped lone surrogates, which no UTF-8 text can hold."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise JSONDecodeError("a string holds an unpaired surrogate escape") from None
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


_DECODER = json.JSONDecoder(parse_float=_parse_number, parse_constant=_no_constants)  # made once, not per call


def decode(text):
    """Parse JSON text (str, or bytes in UTF-8/16/32 as json.loads takes
    them); raises JSONDecodeError."""
    try:
        if isinstance(text, (bytes, bytearray)):
            text = text.decode(json.detect_encoding(text), "surrogatepass")
        elif not isinstance(text, str):
            raise TypeError(f"JSON text must be str or bytes, not {type(text).__name__}")
        elif text.startswith("\ufeff"):  # as json.loads says it
            raise JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig): line 1 column 1 (char 0)")
        value = _DECODER.decode(text)
    except JSONDecodeError:
        raise
    except (ValueError, RecursionError, DecimalException) as exc:  # UnicodeDecodeError is a ValueError
        raise JSONDecodeError(str(exc)) from None
    if _SURROGATE_ESCAPE.search(text):
        _check_strings(value)
    return value


def decode_object(body):
    """A request body (bytes) that must hold a JSON object, decoded: 400
    (errors.BadRequest) unless it is strict UTF-8 and JSON, 400
    (errors.ValidationError) for anything but an object."""
    try:
        text = body.decode("utf-8")  # strict: no UTF-16, no lone surrogates
    except UnicodeDecodeError:
        raise errors.BadRequest("The body is not valid UTF-8.") from None
    try:
        value = decode(text)
    except JSONDecodeError as exc:
        raise errors.BadRequest(f"Malformed JSON body: {exc}") from None
    if not isinstance(value, dict):
        raise errors.ValidationError([{"field": None, "message": "the body must be a JSON object"}])
    return value


def decimal_text(value):
    """A Decimal as plain text without exponent or trailing zeros: 1.50 -> '1.5'."""
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


# made once: json.dumps with any argument builds a new encoder on every call
_ENCODER = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), allow_nan=False)


def _fast(obj):
    try:
        return _ENCODER.encode(obj)
    except TypeError:
        return None


def encode(obj):
    """Serialize to compact JSON text, writing Decimals as exact numbers."""
    text = _fast(obj)
    if text is not None:
        return text
    parts = []
    _write(obj, parts.append)
    return "".join(parts)


def _write(obj, out):
    if isinstance(obj, str):
        out(_encode_string(obj))
    elif obj is None:
        out("null")
    elif obj is True:
        out("true")
    elif obj is False:
        out("false")
    elif isinstance(obj, int):
        out(int.__repr__(obj))
    elif isinstance(obj, Decimal):
        if not obj.is_finite():
            raise ValueError("cannot encode a non-finite Decimal")
        out(decimal_text(obj))
    elif isinstance(obj, dict):
        out("{")
        first = True
        for key, value in obj.items():
            if not first:
                out(",")
            first = False
            out(_encode_string(str(key)))
            out(":")
            _write(value, out)
        out("}")
    elif isinstance(obj, (list, tuple)):
        out("[")
        for i, value in enumerate(obj):
            if i:
                out(",")
            _write(value, out)
        out("]")
    elif isinstance(obj, float):
        out(float.__repr__(obj))  # only timings and metrics; never money
    else:
        raise TypeError(f"cannot encode {type(obj).__name__}")
