from decimal import Decimal

import pytest

from billing import jsonutil


def test_decimals_parse_exactly():
    assert jsonutil.decode('{"q": 0.1}') == {"q": Decimal("0.1")}


@pytest.mark.parametrize("text", ["NaN", '{"q": Infinity}', '{"q": -Infinity}', "{bad", ""])
def test_rejects_nonfinite_and_malformed(text):
    with pytest.raises(jsonutil.JSONDecodeError):
        jsonutil.decode(text)


@pytest.mark.parametrize("text", ['{"q": 1.5}', b'{"q": 1.5}', bytearray(b'{"q": 1.5}'), '{"q": 1.5}'.encode("utf-16"),
                                  b'\xef\xbb\xbf{"q": 1.5}'])
def test_decodes_text_and_bytes_as_json_loads_takes_them(text):
    assert jsonutil.decode(text) == {"q": Decimal("1.5")}


def test_a_bom_before_text_is_refused_by_name():
    with pytest.raises(jsonutil.JSONDecodeError, match="Unexpected UTF-8 BOM"):
        jsonutil.decode("\ufeff{}")


def test_surrogate_escapes_are_refused_in_any_encoding():
    for text in ('{"a": "\\ud800"}', '{"a": "\\ud800"}'.encode("utf-16")):
        with pytest.raises(jsonutil.JSONDecodeError, match="surrogate"):
            jsonutil.decode(text)


def test_encode_decimal_without_exponent():
    assert jsonutil.encode({"q": Decimal("1E+3"), "r": Decimal("0.000001"), "s": "x"}) == \
        '{"q":1000,"r":0.000001,"s":"x"}'
    assert jsonutil.encode([Decimal("2.50")]) == "[2.5]"


def test_encode_escapes_strings():
    assert jsonutil.encode({"<k>": "</script>\u2028"}) == '{"<k>":"</script>\\u2028"}'
