"""Partials combine into exactly what `aggregate` gives for the same events,
however the events are split into pieces."""

import random

from billing.domain.aggregation import AGGREGATIONS, aggregate
from billing.domain.rollup import Partial, combined


def test_any_split_gives_the_aggregate_of_the_events():
    rng = random.Random(3)
    for _ in range(300):
        counted = rng.random() < 0.3
        rows = [(rng.randrange(50), seq, f'"{rng.choice("abcd")}"' if counted else
                 rng.choice([0, 1, 10 ** 18, rng.randrange(10 ** 12)])) for seq in range(rng.randrange(0, 40))]
        rng.shuffle(rows)
        cuts = sorted(rng.sample(range(len(rows) + 1), min(len(rows) + 1, rng.randrange(1, 5))))
        pieces = [combined(Partial.of_event(*row) for row in rows[a:b]) for a, b in zip([0] + cuts, cuts + [len(rows)])]
        for aggregation in AGGREGATIONS:
            if aggregation not in (("count", "unique_count") if counted else AGGREGATIONS[:-2] + ("latest",)):
                continue
            assert combined(pieces).value(aggregation) == aggregate(aggregation, rows), (aggregation, rows)


def test_empty_values():
    empty = Partial()
    assert [empty.value(a) for a in AGGREGATIONS] == [0, 0, None, None, None, 0, None]


def test_sums_past_sixty_four_bits_stay_exact():
    part = combined(Partial.of_event(i, i, 10 ** 18) for i in range(100))
    assert part.value("sum") == 10 ** 14 and part.value("avg") == 10 ** 12
