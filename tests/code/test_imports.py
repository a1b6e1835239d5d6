"""Dependencies point one way (docs/ARCHITECTURE.md): every import in
`billing/`, at module or function level, read from the source with `ast`.

    web → api → (store, domain)      ops → api, store, domain
    domain imports only itself       store imports only errors, clock, config

The shared leaves (errors, clock, config, jsonutil) import nothing of the
project but each other and are open to every layer but domain and store;
`exports` (PDF and CSV writers) sits beside domain; `collect` (the collector,
a separate program) imports only the shared leaves and itself, and ops reads
its meter definitions (the demo); `backup` (the backup command) and `archive` (the archive command) read
store, domain and the leaves. No cycles between modules, at any level.
"""

import ast
import os

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "billing")
LEAVES = {"errors", "clock", "config", "jsonutil", "__init__"}
ALLOWED = {  # layer → the layers it may import (besides itself)
    "domain": set(),
    "store": {"billing.errors", "billing.clock", "billing.config"},  # modules, not layers
    "leaf": {"leaf"},
    "api": {"store", "domain", "leaf", "exports"},
    "exports": {"domain", "leaf"},
    "web": {"api", "store", "domain", "leaf"},
    "ops": {"api", "store", "domain", "leaf", "exports", "collect"},
    "collect": {"leaf"},
    "backup": {"store", "domain", "leaf"},  # `python3 -m billing.backup`, a separate command
    "archive": {"store", "domain", "leaf"},  # `python3 -m billing.archive`, a separate command
    "app": {"web", "api", "ops", "store", "domain", "leaf"},
}


def modules():
    found = {}
    for folder, _, files in os.walk(ROOT):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, os.path.dirname(ROOT))[:-3].replace(os.sep, ".")
                found[rel.removesuffix(".__init__")] = path
    return found


def layer(module):
    parts = module.split(".")
    if len(parts) == 1:
        return "leaf"
    head = parts[1]
    if head in LEAVES:
        return "leaf"
    if head == "app":
        return "app"
    return head


def imports(module, path):
    """(imported module, line) of every `import`/`from` in the file, at any depth."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("billing"):
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("billing"):
                continue
            known = modules()
            for alias in node.names:  # `from . import x` imports the module x
                candidate = f"{target}.{alias.name}"
                yield (candidate if candidate in known else target), node.lineno


def graph():
    known = modules()
    return {module: sorted({(target, line) for target, line in imports(module, path) if target in known
                            and target != module})
            for module, path in known.items()}


def test_every_import_points_the_allowed_way():
    wrong = []
    for module, targets in graph().items():
        mine = layer(module)
        for target, line in targets:
            theirs = layer(target)
            if theirs != mine and theirs not in ALLOWED[mine] and target not in ALLOWED[mine]:
                wrong.append(f"{module}:{line} ({mine}) imports {target} ({theirs})")
    assert wrong == [], "\n".join(wrong)


def test_no_cycles():
    edges = {module: {target for target, _ in targets} for module, targets in graph().items()}
    cycles, state = [], {}

    def visit(node, trail):
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if nxt.startswith(node + ".") or node.startswith(nxt + "."):
                continue  # a package and its own modules
            if state.get(nxt) == "open":
                cycles.append(" → ".join(trail[trail.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert cycles == [], "\n".join(cycles)
