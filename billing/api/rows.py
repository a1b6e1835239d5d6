"""Rows read by column name, whoever fetched them.

Our own queries use `store.db.named` (sqlite3.Row). Some rows reach us as
plain tuples: from `common.one_or_404` and from callers that still read
their rows by position. `by_name` maps those onto the names of the SELECT
list they were read with, so every row is read the same way here.
"""


def names(select_list):
    """The names SQLite gives the items of a SELECT list: "s.id" → "id",
    "p.code AS plan" → "plan"."""
    return tuple(item.split()[-1].split(".")[-1] for item in select_list.split(","))


def by_name(row, columns):
    """`row` readable by column name: a sqlite3.Row, a mapping or None as it
    is; a plain tuple mapped onto `columns` (see `names`)."""
    if isinstance(row, tuple):
        return dict(zip(columns, row))
    return row
