from decimal import Decimal

import pytest

from billing import jsonutil


def test_decimals_parse_exactly():
    assert jsonutil.decode('{"q": 0.1}') == {"q": Decimal("0.1")}


@pytest.mark.parametrize("text", ["NaN", '{"q": Infinity}', '{"q": -Infinity}', "{bad", ""])
def test_rejects_nonfinite_and_malformed(text):
    with pytest.raises(jsonutil.JSONDecodeError):
        jsonutil.decode(text)


def test_encode_decimal_without_exponent():
    assert jsonutil.encode({"q": Decimal("1E+3"), "r": Decimal("0.000001"), "s": "x"}) == \
        '{"q":1000,"r":0.000001,"s":"x"}'
    assert jsonutil.encode([Decimal("2.50")]) == "[2.5]"


def test_encode_escapes_strings():
    assert jsonutil.encode({"<k>": "</script>\u2028"}) == '{"<k>":"</script>\\u2028"}'
