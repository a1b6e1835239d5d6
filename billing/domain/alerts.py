"""Alert arithmetic (§10), pure: budget steps, threshold crossings and spikes.

Money is in integer minor units and quantities are exact Decimals; nothing
here reads the clock or the database.
"""

from decimal import ROUND_HALF_UP, Decimal

SPIKE_FACTOR = 3
SPIKE_DAYS = 7  # the local days before today that a spike is measured against


def budget_steps(monthly_minor, percents):
    """[(percent, threshold in minor units)] of a budget, lowest first. A
    threshold is the percentage of the monthly amount, rounded half-up once."""
    steps = []
    for percent in sorted(set(percents)):
        threshold = (Decimal(monthly_minor) * Decimal(percent) / 100).quantize(Decimal(1), rounding=ROUND_HALF_UP)
        steps.append((int(percent), max(int(threshold), 1)))
    return steps


def crossed(value, threshold):
    """A threshold is crossed once the value reaches it."""
    return value >= threshold


def spike(today, previous_days, minimum, factor=SPIKE_FACTOR):
    """Whether `today`'s usage is a spike against `previous_days` (the values
    of the previous local days): over `factor` × the average of the days
    that had usage (none had any: no spike), and at least `minimum`.
    Returns the average as a Decimal when it is a spike, else None."""
    used = [value for value in previous_days if value > 0]
    if not used or today < minimum:
        return None
    if today * len(used) <= factor * sum(used):  # today > factor × average, without dividing
        return None
    return sum(used) / Decimal(len(used))


def percent_of(value, whole):
    """`value` as a whole percentage of `whole` (rounded down), for messages."""
    if whole <= 0:
        return 0
    return int(Decimal(value) * 100 / Decimal(whole))
