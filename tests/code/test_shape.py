"""Small pieces, read by name (docs/ARCHITECTURE.md): no function in
`billing/` over 60 lines, no file in `billing/` or `static/` over 500 lines,
and at most 30 positional row reads (`row[3]`) left in `billing/`, each on a
hot path with a comment naming its measured cost."""

import ast
import os
import re

HERE = os.path.dirname(os.path.abspath(__file__))
PROJECT = os.path.dirname(os.path.dirname(HERE))
POSITIONAL = re.compile(r"\b(\w*rows?\w*|fetchone\(\))\[[0-9]+\]")
MAX_FUNCTION_LINES = 60
MAX_FILE_LINES = 500
MAX_POSITIONAL_READS = 30


def files(folder, suffix):
    for root, _, names in os.walk(os.path.join(PROJECT, folder)):
        for name in sorted(names):
            if name.endswith(suffix):
                yield os.path.join(root, name)


def rel(path):
    return os.path.relpath(path, PROJECT)


def test_no_function_over_60_lines():
    long = []
    for path in files("billing", ".py"):
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{rel(path)}:{node.lineno} {node.name} ({length} lines)")
    assert long == [], "\n".join(long)


def test_no_file_over_500_lines():
    big = []
    for folder, suffix in (("billing", ".py"), ("static", ".js"), ("static", ".css")):
        for path in files(folder, suffix):
            with open(path, encoding="utf-8") as handle:
                count = sum(1 for _ in handle)
            if count > MAX_FILE_LINES:
                big.append(f"{rel(path)} ({count} lines)")
    assert big == [], "\n".join(big)


def test_rows_are_read_by_name():
    found = []
    for path in files("billing", ".py"):
        for number, line in enumerate(open(path, encoding="utf-8"), 1):
            if POSITIONAL.search(line.split("#")[0]):
                found.append(f"{rel(path)}:{number}: {line.strip()}")
    assert len(found) <= MAX_POSITIONAL_READS, f"{len(found)} positional row reads:\n" + "\n".join(found)
