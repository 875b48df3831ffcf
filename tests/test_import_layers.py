"""The package's import contract: imports only go down the layers, and no module imports
itself through others. Every `import` counts, at module top or inside a function.

    base → data → extract → models → engine → align → train → tune → workflows → cli

(base: config, config_checks, errors, io, metrics, plots, ray_env, distributed, ops; data holds scoring.)
A module may import its own layer or any layer below. The CLI modules register their
commands on one Typer app, so they may import each other; nothing else may form a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import emi_ray

PACKAGE = Path(emi_ray.__file__).parent
LAYERS = [
    ("base", {"emi_ray", "emi_ray.config", "emi_ray.config_checks", "emi_ray.errors", "emi_ray.io", "emi_ray.metrics", "emi_ray.plots",
              "emi_ray.ray_env", "emi_ray.distributed", "emi_ray.ops"}),
    ("data", {"emi_ray.data", "emi_ray.scoring"}),
    ("extract", {"emi_ray.extract"}),
    ("models", {"emi_ray.models"}),
    ("engine", {"emi_ray.engine"}),
    ("align", {"emi_ray.align"}),
    ("train", {"emi_ray.train"}),
    ("tune", {"emi_ray.tune"}),
    ("workflows", {"emi_ray.workflows"}),
    ("cli", {"emi_ray.cli", "emi_ray.__main__"}),
]


def module_name(path: Path) -> str:
    parts = ("emi_ray", *path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def layer(module: str) -> int:
    """Index in LAYERS: the longest matching prefix wins (emi_ray.cli_train is a CLI module)."""
    if module.startswith("emi_ray.cli"):
        return len(LAYERS) - 1
    best = None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and (best is None or len(p) > best[1]):
                best = (i, len(p))
    assert best is not None, f"{module}: not in any layer of {__file__}"
    return best[0]


def _is_type_checking(node: ast.AST) -> bool:
    """`if TYPE_CHECKING:` (or `typing.TYPE_CHECKING`)."""
    if not isinstance(node, ast.If):
        return False
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def imports(path: Path, known: set[str]) -> set[str]:
    """The package modules `path` imports (a `from pkg import name` counts pkg.name when that is a module)."""
    found = set()
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for block in ast.walk(tree) if _is_type_checking(block)
                   for stmt in block.body for n in ast.walk(stmt)}  # annotations only: never run
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        else:
            continue
        found |= {n for n in names if n in known}
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: imports(p, set(mods)) - {m} for m, p in mods.items()}


def test_every_module_has_a_layer():
    for m in modules():
        layer(m)


def test_imports_only_go_down():
    upward = [f"{m} ({LAYERS[layer(m)][0]}) imports {d} ({LAYERS[layer(d)][0]})"
              for m, deps in graph().items() for d in sorted(deps)
              if layer(d) > layer(m) and d != "emi_ray"]
    assert not upward, "\n".join(upward)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_circles_outside_the_cli():
    edges = {m: {d for d in deps if layer(d) < len(LAYERS) - 1}
             for m, deps in graph().items() if layer(m) < len(LAYERS) - 1}
    assert not cycles(edges), cycles(edges)


def test_the_contract_can_fail():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert layer("emi_ray.cli_train") > layer("emi_ray.workflows.default_store") > layer("emi_ray.data.store")


def test_the_cli_starts_without_the_heavy_libraries():
    """`emi-ray --help` stays fast (well under 1 s) because the CLI imports no library module at start."""
    import subprocess
    import sys

    code = ("import sys, emi_ray.cli; "
            "print(sorted(m for m in ('torch', 'ray', 'pyarrow', 'optuna', 'av', 'transformers', 'numpy') "
            "if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"
