"""The layer contract of docs/architecture.md, checked on the source (an import-linter
equivalent): imports point one way, there is no import cycle, and nbseg modules are imported
at module level (function-local imports only for optional or heavy third-party packages)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "nbseg"

#: Layers, lowest first: a module may import modules of its own layer or lower ones only.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "leaf",
        (
            "nbseg._system",
            "nbseg._files",
            "nbseg._png",
            "nbseg._version",
            "nbseg._lab_settings",
            "nbseg.errors",
            "nbseg.settings",
            "nbseg.progress",
            "nbseg.devices",
            "nbseg.jobs",
            "nbseg.paths",
            "nbseg.ngff",
        ),
    ),
    ("data, models", ("nbseg.data", "nbseg.models", "nbseg.datasets", "nbseg.render")),
    ("training, inference", ("nbseg.training", "nbseg.inference")),
    ("model, store", ("nbseg.model", "nbseg.store", "nbseg.evaluation")),
    ("io, config", ("nbseg.io", "nbseg.formats", "nbseg.config", "nbseg.project")),
    ("ui, cli", ("nbseg.ui", "nbseg.cli", "nbseg")),
]

#: The one allowed function-local nbseg import: the package loads the widgets lazily.
LAZY = {("nbseg", "nbseg.ui.tool")}


def _modules() -> dict[str, Path]:
    out = {}
    for p in PACKAGE.rglob("*.py"):
        parts = list(p.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


MODULES = _modules()


def layer_of(module: str) -> int:
    best = None
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (i, len(prefix))
    assert best is not None, f"{module} has no layer in tests/test_architecture.py"
    return best[0]


def _imports(module: str, path: Path) -> list[tuple[str, bool]]:
    """``(imported nbseg module, function-local?)`` for runtime imports (TYPE_CHECKING
    blocks excluded)."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    local: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            local.update(id(n) for n in ast.walk(node))
    base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                root = base[: len(base) - (node.level - 1)]
                target = ".".join(root + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES]
            targets = subs if len(subs) == len(node.names) else [target, *subs]
        for t in targets:
            if t in MODULES and t != module:
                out.append((t, id(node) in local))
    return out


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def test_every_module_has_a_layer():
    for module in MODULES:
        assert 0 <= layer_of(module) < len(LAYERS)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down_the_layers(module):
    mine = layer_of(module)
    for target, _local in GRAPH[module]:
        if (module, target) in LAZY:
            continue
        assert layer_of(target) <= mine, (
            f"{module} ({LAYERS[mine][0]}) imports {target} ({LAYERS[layer_of(target)][0]}): "
            "layers point one way (docs/architecture.md)"
        )


def test_models_know_nothing_of_training():
    for module, imports in GRAPH.items():
        if module.startswith("nbseg.models"):
            assert not [t for t, _ in imports if t.startswith("nbseg.training")], module


def test_no_function_local_nbseg_imports():
    found = [
        (m, t)
        for m, imports in GRAPH.items()
        for t, local in imports
        if local and (m, t) not in LAZY
    ]
    assert not found, f"import these at module level: {found}"


def test_no_import_cycle():
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w, _ in GRAPH[v]:
            if (v, w) in LAZY:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(MODULES):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_private_names_do_not_cross_modules():
    crossing = []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                for alias in node.names:
                    private = alias.name.startswith("_") and not alias.name.startswith("__")
                    is_module = any(m.endswith("." + alias.name) for m in MODULES)
                    if private and not is_module:  # a private module may be imported
                        crossing.append(f"{module}: {alias.name}")
    assert not crossing, f"private names imported from other modules: {crossing}"
