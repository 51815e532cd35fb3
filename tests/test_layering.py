"""The import graph: no cycles, and every import points down the layers of docs/architecture.md's picture.

Every ``import`` statement counts, the ones inside functions too (a lazy import is still a
dependency). ``meft`` is below everything and imports nothing of memprof.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("memprof", "meft")

#: package (or shared module) -> layer; a module may import only from its own layer or lower ones
#: (and, inside one layer, without a cycle). The longest matching prefix wins.
LAYERS = {
    "meft": 0,
    "memprof.errors": 1,
    "memprof.version": 1,
    "memprof.results": 2,
    "memprof.units": 3,
    "memprof.outputs": 3,
    "memprof.reporters": 4,
    "memprof.instrument": 5,
    "memprof.models": 6,
    "memprof.methods": 7,
    "memprof.engines": 8,
    "memprof.sweep": 9,
    "memprof.fit": 9,
    "memprof.checks": 9,
    "memprof.integrations": 10,
    "memprof.cli": 11,
    "memprof": 12,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def layer(module: str) -> int:
    prefixes = [p for p in LAYERS if module == p or module.startswith(p + ".")]
    assert prefixes, f"{module} is in no layer: add it to LAYERS (and to docs/architecture.md's picture)"
    return LAYERS[max(prefixes, key=len)]


def _resolve(name: str) -> str | None:
    """The project module ``name`` refers to (a module, or a name inside one), or None if foreign."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def imports(module: str) -> set[str]:
    """The project modules ``module`` imports, anywhere in its body."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], base]).strip(".")
            names = [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        found |= {m for m in map(_resolve, names) if m is not None and m != module}
    return found


GRAPH = {m: imports(m) for m in MODULES}


def test_every_module_has_a_layer():
    for m in MODULES:
        layer(m)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module):
    up = sorted(dep for dep in GRAPH[module] if layer(dep) > layer(module))
    assert not up, f"{module} (layer {layer(module)}) imports {up}, which sit above it"


def test_meft_imports_nothing_of_memprof():
    bad = {m: sorted(d for d in deps if d.startswith("memprof")) for m, deps in GRAPH.items() if m.startswith("meft")}
    assert not {m: d for m, d in bad.items() if d}


def test_commands_import_no_other_command():
    """A command's shared work belongs to the library below it; the commands meet only in cli.app
    (the typer app, error handling), cli.views (renderings several commands print) and cli.options
    (the option types they share)."""
    shared = ("memprof.cli.app", "memprof.cli.views", "memprof.cli.options")
    for m, deps in GRAPH.items():
        if m.startswith("memprof.cli."):
            others = sorted(d for d in deps if d.startswith("memprof.cli") and d not in (*shared, m))
            assert not others, f"{m} imports the commands {others}"


def test_commands_are_thin():
    """No function body in memprof/cli is longer than 40 lines. The body starts after the signature
    and the docstring: a command's signature is its list of options (their types are declared once,
    in cli/options.py), one per line as the formatter writes it."""
    long = []
    for m, path in MODULES.items():
        if m.startswith("memprof.cli"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    body = node.body[1:] if ast.get_docstring(node) is not None and len(node.body) > 1 else node.body
                    if node.end_lineno - body[0].lineno + 1 > 40:
                        long.append(f"{m}.{node.name}: {node.end_lineno - body[0].lineno + 1} lines")
    assert not long


def test_every_imported_name_exists():
    """``from memprof.x import name``: ``name`` is in ``memprof.x`` (the walk above only resolves the
    module, so a name that moved away would pass it and fail only when that line runs)."""
    import importlib

    missing = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").split(".")[0] in PACKAGES:
                target = importlib.import_module(node.module)
                missing += [
                    f"{module}: {node.module}.{a.name}"
                    for a in node.names
                    if not hasattr(target, a.name) and f"{node.module}.{a.name}" not in MODULES
                ]
    assert not missing


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep) :] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle():
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


#: the only modules directly in memprof/: small and shared by every stage (docs/architecture.md)
SHARED_MODULES = {"memprof", "memprof.errors", "memprof.version", "memprof.units", "memprof.outputs"}


def test_memprof_has_no_top_level_module_but_the_shared_ones():
    top = {m for m, path in MODULES.items() if m.startswith("memprof") and path.parent == ROOT / "memprof"}
    assert top <= SHARED_MODULES, f"put {sorted(top - SHARED_MODULES)} in the package of its stage"


def test_every_package_of_memprof_has_a_layer_of_its_own():
    packages = {f"memprof.{p.name}" for p in (ROOT / "memprof").iterdir() if (p / "__init__.py").exists()}
    assert packages <= set(LAYERS), f"add {sorted(packages - set(LAYERS))} to LAYERS and to docs/architecture.md"
