"""Plan validation and normalisation (pure): raw JSON in, checked plan out.

A stored plan keeps prices as exact decimal strings and money amounts (base
fee, commitment) as integer minor units; `to_charges` turns the stored form
into rating.Charge values.
"""

import re
from decimal import Decimal

from . import money, quantities
from .rating import MODELS, Charge, Tier

CODE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
PLAN_FIELDS = {"code", "name", "currency", "interval", "base_fee", "minimum_commitment", "trial_days",
               "charges", "description"}
PRICING_FIELDS = ("currency", "interval", "base_fee", "minimum_commitment", "trial_days", "charges")
COMMON_CHARGE_FIELDS = {"meter", "model", "free_units", "free_units_per_day", "minimum_charge"}
CHARGE_FIELDS = {
    "per_unit": COMMON_CHARGE_FIELDS | {"unit_price"},
    "graduated": COMMON_CHARGE_FIELDS | {"tiers"},
    "volume": COMMON_CHARGE_FIELDS | {"tiers"},
    "package": COMMON_CHARGE_FIELDS | {"package_size", "package_price"},
}
PRICE_DIGITS = 12
MAX_TIERS = 50
MAX_CHARGES = 50


def _price(value, field, problems, required=True):
    """A non-negative decimal string with up to 12 fractional digits (kept as
    the exact string given)."""
    if value is None:
        if required:
            problems.add(field, "is required: a decimal string like \"0.002\"")
        return None
    try:
        return str(money.parse_decimal(value, PRICE_DIGITS))
    except money.MoneyError as exc:
        problems.add(field, str(exc))
        return None


def _units(value, field, problems):
    """A non-negative quantity (JSON number, at most 6 decimals)."""
    try:
        return quantities.from_micros(quantities.to_micros(value))
    except quantities.QuantityError as exc:
        problems.add(field, str(exc))
        return None


def check_tiers(tiers, field, problems):
    """Tiers strictly ascending by up_to, only the last open-ended (null)."""
    if not isinstance(tiers, list) or not tiers:
        problems.add(field, "must be a non-empty list of tiers")
        return None
    if len(tiers) > MAX_TIERS:
        problems.add(field, f"at most {MAX_TIERS} tiers")
        return None
    result = []
    previous = Decimal(0)
    for i, tier in enumerate(tiers):
        where = f"{field}[{i}]"
        if not isinstance(tier, dict):
            problems.add(where, "must be an object with up_to and unit_price")
            return None
        unknown = set(tier) - {"up_to", "unit_price", "flat_fee"}
        if unknown:
            problems.add(where, f"unknown keys: {', '.join(sorted(unknown))}")
        up_to = tier.get("up_to")
        last = i == len(tiers) - 1
        if up_to is None:
            if not last:
                problems.add(f"{where}.up_to", "only the last tier may be open-ended (null)")
        else:
            up_to = _units(up_to, f"{where}.up_to", problems)
            if up_to is not None and up_to <= previous:
                problems.add(f"{where}.up_to", "tiers must be strictly ascending (and above 0)")
            if up_to is not None:
                previous = up_to
        unit_price = _price(tier.get("unit_price"), f"{where}.unit_price", problems)
        flat_fee = _price(tier.get("flat_fee"), f"{where}.flat_fee", problems, required=False)
        result.append({"up_to": up_to, "unit_price": unit_price, "flat_fee": flat_fee})
    return result


def check_charge(raw, index, meters, problems, overrides=False):
    """One charge, checked; returns its stored form (strings for prices)."""
    where = f"charges[{index}]"
    if not isinstance(raw, dict):
        problems.add(where, "must be an object")
        return None
    model = raw.get("model")
    if model not in MODELS:
        problems.add(f"{where}.model", f"must be one of {', '.join(MODELS)}")
        return None
    unknown = set(raw) - CHARGE_FIELDS[model]
    if unknown:
        problems.add(where, f"unknown keys for a {model} charge: {', '.join(sorted(unknown))}")
    meter = raw.get("meter")
    if not isinstance(meter, str) or meter not in meters:
        problems.add(f"{where}.meter", f"unknown meter {meter!r}")
    stored = {"meter": meter, "model": model}
    stored["free_units"] = _units(raw.get("free_units", 0), f"{where}.free_units", problems)
    if raw.get("free_units_per_day") is not None:  # stored only when given
        stored["free_units_per_day"] = _units(raw["free_units_per_day"], f"{where}.free_units_per_day", problems)
    minimum = _price(raw.get("minimum_charge"), f"{where}.minimum_charge", problems, required=False)
    stored["minimum_charge"] = minimum
    if model == "per_unit":
        stored["unit_price"] = _price(raw.get("unit_price"), f"{where}.unit_price", problems)
    elif model in ("graduated", "volume"):
        stored["tiers"] = check_tiers(raw.get("tiers"), f"{where}.tiers", problems)
    else:
        size = raw.get("package_size")
        if isinstance(size, bool) or not isinstance(size, int) or size < 1 or size > 10 ** 12:
            problems.add(f"{where}.package_size", "must be an integer ≥ 1")
        stored["package_size"] = size
        stored["package_price"] = _price(raw.get("package_price"), f"{where}.package_price", problems)
    return stored


def check_plan(body, meters, problems, creating=True, current=None):
    """Validate a plan body; returns the stored values (only those given on
    update). Problems are recorded in the order of the fields below."""
    values = {}
    for name in body:
        if name not in PLAN_FIELDS:
            problems.add(name, "is not a known field")
    _check_names(body, values, problems, creating)
    currency = _check_currency(body, values, problems, creating, current)
    _check_terms(body, values, problems, creating, currency)
    if creating or "charges" in body:
        values["charges"] = _check_charges(body.get("charges", []), meters, problems)
    return values


def _check_names(body, values, problems, creating):
    """code (fixed once created), name and description."""
    if creating:
        code = body.get("code")
        if not isinstance(code, str) or not CODE_PATTERN.match(code):
            problems.add("code", "is required: letters, digits, '_', '.', '-' (max 64)")
        values["code"] = code
    elif "code" in body:
        problems.add("code", "cannot be changed")
    if creating or "name" in body:
        name = body.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > 200:
            problems.add("name", "is required: a string of at most 200 characters")
        values["name"] = name.strip() if isinstance(name, str) else None
    if "description" in body:
        description = body["description"]
        if description is not None and (not isinstance(description, str) or len(description) > 2000):
            problems.add("description", "must be a string of at most 2000 characters")
        values["description"] = description


def _check_currency(body, values, problems, creating, current):
    """The plan's currency (None when invalid): given, else USD or the current one."""
    currency = body.get("currency", "USD" if creating else current["currency"])
    if creating or "currency" in body:
        if not money.is_currency(currency):
            problems.add("currency", f"unknown currency code {currency!r} (ISO 4217 expected)")
            currency = None
        values["currency"] = currency
    return currency


def _check_terms(body, values, problems, creating, currency):
    """interval, base fee, minimum commitment and trial days."""
    if creating or "interval" in body:
        interval = body.get("interval", "month")
        if interval != "month":
            problems.add("interval", "must be \"month\"")
        values["interval"] = "month"
    for name in ("base_fee", "minimum_commitment"):
        if creating or name in body:
            raw = body.get(name, "0")
            if raw is None:
                raw = "0"
            try:
                values[name] = money.parse_amount(raw, currency) if currency else 0
            except money.MoneyError as exc:
                problems.add(name, f"{exc} (a money string in {currency})")
    if creating or "trial_days" in body:
        trial = body.get("trial_days", 0)
        if trial is None:
            trial = 0
        if isinstance(trial, bool) or not isinstance(trial, int) or not 0 <= trial <= 730:
            problems.add("trial_days", "must be an integer between 0 and 730")
        values["trial_days"] = trial


def _check_charges(charges, meters, problems):
    """The stored charges: each checked, no meter charged twice."""
    if not isinstance(charges, list) or len(charges) > MAX_CHARGES:
        problems.add("charges", f"must be a list of at most {MAX_CHARGES} charges")
        charges = []
    stored = [check_charge(c, i, meters, problems) for i, c in enumerate(charges)]
    seen = set()
    for i, charge in enumerate(stored):
        if charge and charge["meter"] in seen:
            problems.add(f"charges[{i}].meter", f"meter {charge['meter']!r} is charged twice")
        if charge:
            seen.add(charge["meter"])
    return stored


def to_charges(stored_charges):
    """Stored charge dicts (decimal strings or Decimals) → rating.Charge values."""
    result = []
    for c in stored_charges:
        d = lambda v: Decimal(str(v)) if v is not None else Decimal(0)  # noqa: E731
        tiers = tuple(Tier(None if t["up_to"] is None else Decimal(str(t["up_to"])), d(t["unit_price"]),
                           d(t.get("flat_fee"))) for t in c.get("tiers") or ())
        result.append(Charge(c["meter"], c["model"], d(c.get("free_units")), d(c.get("unit_price")), tiers,
                             int(c.get("package_size") or 1), d(c.get("package_price")),
                             d(c.get("minimum_charge")), d(c.get("free_units_per_day"))))
    return result
