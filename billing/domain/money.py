"""Money: ISO 4217 currencies, exact decimal parsing, integer minor units.

Amounts at rest are integers in the currency's minor unit (cents, fils, yen).
Rounding is always ROUNDING, half-up (ties away from zero), applied once per line.
"""

import re
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

ROUNDING = ROUND_HALF_UP

# ISO 4217 active codes and their minor-unit exponents.
CURRENCIES = {
    "AED": 2, "AFN": 2, "ALL": 2, "AMD": 2, "ANG": 2, "AOA": 2, "ARS": 2, "AUD": 2, "AWG": 2,
    "AZN": 2, "BAM": 2, "BBD": 2, "BDT": 2, "BGN": 2, "BHD": 3, "BIF": 0, "BMD": 2, "BND": 2,
    "BOB": 2, "BRL": 2, "BSD": 2, "BTN": 2, "BWP": 2, "BYN": 2, "BZD": 2, "CAD": 2, "CDF": 2,
    "CHF": 2, "CLP": 0, "CNY": 2, "COP": 2, "CRC": 2, "CUP": 2, "CVE": 2, "CZK": 2, "DJF": 0,
    "DKK": 2, "DOP": 2, "DZD": 2, "EGP": 2, "ERN": 2, "ETB": 2, "EUR": 2, "FJD": 2, "FKP": 2,
    "GBP": 2, "GEL": 2, "GHS": 2, "GIP": 2, "GMD": 2, "GNF": 0, "GTQ": 2, "GYD": 2, "HKD": 2,
    "HNL": 2, "HTG": 2, "HUF": 2, "IDR": 2, "ILS": 2, "INR": 2, "IQD": 3, "IRR": 2, "ISK": 0,
    "JMD": 2, "JOD": 3, "JPY": 0, "KES": 2, "KGS": 2, "KHR": 2, "KMF": 0, "KPW": 2, "KRW": 0,
    "KWD": 3, "KYD": 2, "KZT": 2, "LAK": 2, "LBP": 2, "LKR": 2, "LRD": 2, "LSL": 2, "LYD": 3,
    "MAD": 2, "MDL": 2, "MGA": 2, "MKD": 2, "MMK": 2, "MNT": 2, "MOP": 2, "MRU": 2, "MUR": 2,
    "MVR": 2, "MWK": 2, "MXN": 2, "MYR": 2, "MZN": 2, "NAD": 2, "NGN": 2, "NIO": 2, "NOK": 2,
    "NPR": 2, "NZD": 2, "OMR": 3, "PAB": 2, "PEN": 2, "PGK": 2, "PHP": 2, "PKR": 2, "PLN": 2,
    "PYG": 0, "QAR": 2, "RON": 2, "RSD": 2, "RUB": 2, "RWF": 0, "SAR": 2, "SBD": 2, "SCR": 2,
    "SDG": 2, "SEK": 2, "SGD": 2, "SHP": 2, "SLE": 2, "SOS": 2, "SRD": 2, "SSP": 2, "STN": 2,
    "SYP": 2, "SZL": 2, "THB": 2, "TJS": 2, "TMT": 2, "TND": 3, "TOP": 2, "TRY": 2, "TTD": 2,
    "TWD": 2, "TZS": 2, "UAH": 2, "UGX": 0, "USD": 2, "UYU": 2, "UZS": 2, "VES": 2, "VND": 0,
    "VUV": 0, "WST": 2, "XAF": 0, "XCD": 2, "XOF": 0, "XPF": 0, "YER": 2, "ZAR": 2, "ZMW": 2,
    "ZWL": 2,
}

_DECIMAL_TEXT = re.compile(r"-?[0-9]{1,15}(\.[0-9]+)?")  # ASCII digits only, matched whole (fullmatch)


class MoneyError(ValueError):
    pass


def minor_digits(currency):
    try:
        return CURRENCIES[currency]
    except (KeyError, TypeError):
        raise MoneyError(f"unknown currency code {currency!r} (ISO 4217 expected)") from None


def is_currency(code):
    return isinstance(code, str) and code in CURRENCIES


def parse_decimal(text, max_fraction_digits=12, allow_negative=False):
    """A decimal string ('12.34') as an exact Decimal; raises MoneyError."""
    if not isinstance(text, str) or not _DECIMAL_TEXT.fullmatch(text):
        raise MoneyError("must be a decimal string like \"12.34\"")
    value = Decimal(text)
    if value < 0 and not allow_negative:
        raise MoneyError("must not be negative")
    if -value.as_tuple().exponent > max_fraction_digits:
        raise MoneyError(f"must have at most {max_fraction_digits} decimal places")
    return value


def parse_amount(text, currency, allow_negative=False):
    """A money string in major units with at most the currency's minor digits →
    integer minor units."""
    digits = minor_digits(currency)
    value = parse_decimal(text, digits, allow_negative)
    return int(value.scaleb(digits))


def to_minor(amount, currency):
    """Round an exact Decimal amount once, half-up, to integer minor units."""
    digits = minor_digits(currency)
    try:
        return int(amount.scaleb(digits).quantize(Decimal(1), rounding=ROUNDING))
    except InvalidOperation:
        raise MoneyError("amount out of range") from None


def format_minor(minor, currency):
    """Integer minor units as a string with exactly the currency's digits."""
    digits = minor_digits(currency)
    sign = "-" if minor < 0 else ""
    minor = abs(minor)
    if digits == 0:
        return f"{sign}{minor}"
    whole, fraction = divmod(minor, 10 ** digits)
    return f"{sign}{whole}.{fraction:0{digits}d}"


def parse_percent(text):
    """A percentage string ('18', '7.25'), 0 ≤ p ≤ 100."""
    value = parse_decimal(text, 6)
    if value > 100:
        raise MoneyError("must be at most 100")
    return value
