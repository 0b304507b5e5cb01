"""The house plan, enforced by reading the source (``ast``), not by importing it.

Every ``import`` / ``from ... import`` in every module of ``dsprobe/`` counts, including those inside
functions and under ``TYPE_CHECKING``: a lazy import hides a cycle from Python, not from the design.
``from dsprobe import Name`` is followed through the lazy table in ``dsprobe/__init__.py`` to the
module that defines ``Name``. docs/architecture.md draws the same rules.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "dsprobe"

# Packages from the bottom up. A package imports only packages of lower layers (never sideways,
# never upward); the one exception within a layer is listed in SIDEWAYS.
LAYERS = [
    ("records", "detections", "nvinfer"),  # core types and nvinfer's rules; no I/O
    ("recording", "postprocess"),  # HDF5 files; decode -> cluster -> scale -> filter
    ("reference", "deepstream"),  # the ONNX reference recorder; the live adapter (pyds lazily)
    ("analysis", "sample"),  # evaluate, search, compare, export; the bundled sample
    ("notebook",),  # figures, plots, browser, tuner: the only matplotlib / ipywidgets users
    ("cli",),  # one module per command; dsprobe/__main__.py belongs here
]
SIDEWAYS = {("detections", "records")}  # Detections carries the records' object ids
CORE = {name for layer in LAYERS[:3] for name in layer}
UI_ONLY_LIBRARIES = ("matplotlib", "ipywidgets", "IPython")

# Import cycles that helpers are removing now. Each entry names its owner; the test fails once a
# listed cycle is gone, so the owner empties the entry in the same change. Nothing new goes here.
ALLOWED_CYCLES: dict[frozenset[str], str] = {}
# Private names imported across modules, same rules: (importer, module, name): owner.
ALLOWED_PRIVATE: dict[tuple[str, str, str], str] = {}


@dataclass(frozen=True)
class Edge:
    source: str  # importing module, dotted
    target: str  # imported module, dotted
    name: str | None  # the name taken from it (``from target import name``), else None
    where: str  # path:line, for the failure message


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def lazy_table() -> dict[str, str]:
    """``_EXPORTS`` of ``dsprobe/__init__.py``: public name -> defining module."""
    for node in ast.walk(ast.parse((ROOT / "__init__.py").read_text())):
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "_EXPORTS" for t in node.targets
        ):
            return ast.literal_eval(node.value)
    raise AssertionError("dsprobe/__init__.py has no _EXPORTS table")


def base_of(module: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    parts = package.split(".")
    parts = parts[: len(parts) - node.level + 1]
    return ".".join(parts + ([node.module] if node.module else []))


def edges_of(module: str, path: Path, exports: dict[str, str]) -> list[Edge]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        where = f"{path.relative_to(ROOT.parent)}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            out += [Edge(module, a.name, None, where) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = base_of(module, path, node)
            for a in node.names:
                if f"{base}.{a.name}" in MODULES:  # ``from package import submodule``
                    out.append(Edge(module, f"{base}.{a.name}", None, where))
                elif base == "dsprobe" and a.name in exports:  # through the lazy table
                    out.append(Edge(module, exports[a.name], a.name, where))
                else:
                    out.append(Edge(module, base, a.name, where))
    return out


EDGES = [e for m, p in MODULES.items() for e in edges_of(m, p, lazy_table())]
INTERNAL = [e for e in EDGES if e.target == "dsprobe" or e.target.startswith("dsprobe.")]


def package_of(module: str) -> str:
    """``dsprobe.recording.writer`` -> ``recording``; ``dsprobe.__main__`` counts as ``cli``."""
    top = module.split(".")[1] if "." in module else ""
    return "cli" if top == "__main__" else top


RANK = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}


def test_every_module_belongs_to_a_layer():
    unplaced = sorted({package_of(m) for m in MODULES} - set(RANK) - {""})
    assert not unplaced, (
        f"packages missing from LAYERS (place them in docs/architecture.md too): {unplaced}"
    )


def test_nothing_imports_upward_or_sideways():
    bad = []
    for e in INTERNAL:
        src, dst = package_of(e.source), package_of(e.target)
        if dst == "" and e.name in (None, "__version__"):
            continue  # the package root itself: the version string, or the lazy table's module
        if src == dst or (src, dst) in SIDEWAYS:
            continue
        if src == "" or dst == "" or RANK[dst] >= RANK[src]:
            bad.append(f"{e.where}: {e.source} ({src}) imports {e.target} ({dst})")
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


def test_core_never_imports_analysis_notebook_or_cli():
    bad = [
        f"{e.where}: {e.source} imports {e.target}"
        for e in INTERNAL
        if package_of(e.source) in CORE and package_of(e.target) in {"analysis", "notebook", "cli"}
    ]
    assert not bad, "\n".join(bad)


def test_only_the_notebook_package_imports_plotting_or_widgets():
    bad = [
        f"{e.where}: {e.source} imports {e.target}"
        for e in EDGES
        if e.target.split(".")[0] in UI_ONLY_LIBRARIES and package_of(e.source) != "notebook"
    ]
    assert not bad, "\n".join(bad)


def import_cycles(edges: list[Edge]) -> list[frozenset[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for e in edges:
        if e.target in MODULES and e.target != e.source:
            graph[e.source].add(e.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    component = set()
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        component.add(w)
                        if w == v:
                            break
                    if len(component) > 1:
                        cycles.append(frozenset(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[v] = min(low[v], index[child])
    return cycles


def test_cycle_finder_finds_a_cycle():
    """The finder itself, on a graph with one known cycle (so an empty answer above means something)."""
    a, b, c = sorted(MODULES)[1:4]
    edges = [Edge(a, b, None, "x"), Edge(b, c, None, "y"), Edge(c, a, None, "z")]
    assert import_cycles(edges) == [frozenset({a, b, c})]
    assert import_cycles(edges[:2]) == []


def test_no_import_cycles_between_modules():
    cycles = import_cycles(INTERNAL)
    new = [sorted(c) for c in cycles if c not in ALLOWED_CYCLES]
    assert not new, f"import cycles: {new}"
    gone = [f"{sorted(c)} ({owner})" for c, owner in ALLOWED_CYCLES.items() if c not in cycles]
    assert not gone, f"these cycles are gone: remove them from ALLOWED_CYCLES: {gone}"


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_reach_ins() -> dict[tuple[str, str, str], str]:
    """(importer, module, name) -> where, for every private name one module takes from another:
    ``from m import _x``, ``import m._private``, and ``alias._x`` on an imported dsprobe module."""
    found = {}
    for e in INTERNAL:
        if e.target == e.source:
            continue
        if e.name is not None and is_private(e.name):
            found[(e.source, e.target, e.name)] = e.where
        elif any(is_private(p) for p in e.target.split(".")):
            found[(e.source, e.target, "")] = e.where
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text())
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("dsprobe.") and a.asname:
                        aliases[a.asname] = a.name
            elif isinstance(node, ast.ImportFrom):
                for a in node.names:
                    full = f"{base_of(module, path, node)}.{a.name}"
                    if full in MODULES and full != module:
                        aliases[a.asname or a.name] = full
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and is_private(node.attr)
            ):
                key = (module, aliases[node.value.id], node.attr)
                found[key] = f"{path.relative_to(ROOT.parent)}:{node.lineno}"
    return found


def test_no_module_imports_another_modules_private_names():
    found = private_reach_ins()
    new = [
        f"{where}: {k[0]} takes {k[2] or k[1]} from {k[1]}"
        for k, where in found.items()
        if k not in ALLOWED_PRIVATE
    ]
    assert not new, "private names used across modules:\n" + "\n".join(sorted(new))
    gone = [str(k) for k in ALLOWED_PRIVATE if k not in found]
    assert not gone, f"these are fixed: remove them from ALLOWED_PRIVATE: {gone}"
