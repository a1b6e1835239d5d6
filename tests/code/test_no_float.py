"""Money never touches a float: the money, rating and invoicing code has no
float literal, no float() call and no true division of plain numbers."""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODULES = ["billing/domain/money.py", "billing/domain/rating.py", "billing/domain/invoicing.py",
           "billing/domain/plans.py", "billing/domain/quantities.py", "billing/domain/aggregation.py",
           "billing/api/plans.py", "billing/api/lifecycle.py", "billing/api/adjustments.py",
           "billing/api/invoices.py", "billing/api/sessions.py", "billing/api/resources.py", "billing/api/analytics.py",
           "billing/exports/pdf.py", "billing/api/exports.py"]


@pytest.mark.parametrize("path", MODULES)
def test_no_float(path):
    tree = ast.parse(open(os.path.join(ROOT, path), encoding="utf-8").read())
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, float):
            problems.append(f"float literal at line {node.lineno}")
        if isinstance(node, ast.Name) and node.id == "float":
            problems.append(f"float at line {node.lineno}")
    assert problems == []
