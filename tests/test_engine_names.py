"""The engine table: nothing outside the engines' own files asks which engine it has by name.

NOTE [ What counts as an engine test ]
A comparison (``==``, ``!=``, ``in``, ``not in``, ``is``) with a string constant that names an
engine, alone or in a tuple, list or set. "cpu" and "cuda" also name devices and targets
(``device.type == "cpu"``, ``target == "cuda"``), so for a name that is also a device type the
comparison counts only when its other side mentions an engine (a name, attribute or key with
"engine" in it: ``config.engine``, ``options.get("engine")``); "fake" counts anywhere.
"""

from __future__ import annotations

import ast
from pathlib import Path

from memprof.engines import engine_names

ROOT = Path(__file__).resolve().parents[1]
ENGINES = ROOT / "memprof" / "engines"
#: the files that define an engine, and so may name their own (registry.py holds the table)
ENGINE_FILES = {ENGINES / f for f in ("base.py", "registry.py", "fake.py", "cpu.py", "cuda.py")}
DEVICE_TYPES = {"cpu", "cuda", "meta", "mps", "xpu"}
NAMES = set(engine_names())


def _engine_constants(node: ast.AST) -> set[str]:
    """The engine names ``node`` is, as a string constant or a tuple / list / set of them."""
    items = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
    return {i.value for i in items if isinstance(i, ast.Constant) and isinstance(i.value, str) and i.value in NAMES}


def _words(node: ast.AST) -> list[object]:
    """The names, attributes and constants in ``node``."""
    return [
        n.id if isinstance(n, ast.Name) else n.attr if isinstance(n, ast.Attribute) else n.value
        for n in ast.walk(node)
        if isinstance(n, (ast.Name, ast.Attribute, ast.Constant))
    ]


def _mentions_engine(node: ast.AST) -> bool:
    return any(isinstance(word, str) and "engine" in word for word in _words(node))


def engine_tests(path: Path, root: Path = ROOT) -> list[str]:
    """Comparisons in ``path`` against an engine name (NOTE [ What counts as an engine test ]), each
    as ``file:line: source``, the file relative to ``root``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Compare):
            continue
        operands = [node.left, *node.comparators]
        for i, operand in enumerate(operands):
            names = _engine_constants(operand)
            others = operands[:i] + operands[i + 1 :]
            if names and (names - DEVICE_TYPES or any(_mentions_engine(o) for o in others)):
                found.append(f"{path.relative_to(root)}:{node.lineno}: {ast.unparse(node)}")
                break
    return found


def test_no_module_outside_the_engine_files_tests_an_engine_name():
    sources = [p for pkg in ("memprof", "meft") for p in sorted((ROOT / pkg).rglob("*.py")) if p not in ENGINE_FILES]
    found = [t for p in sources for t in engine_tests(p)]
    assert not found, "ask the engine (memprof.engines.engine_named(name).<property>) instead:\n" + "\n".join(found)


def test_the_scan_finds_an_engine_name(tmp_path):
    path = tmp_path / "sample.py"
    path.write_text(
        "if config.engine == 'fake': pass\n"
        "if options.get('engine', 'fake') != 'cuda': pass\n"
        "if engine in ('cpu', 'cuda'): pass\n"
        "if 'fake' == name: pass\n"
        "if device.type == 'cpu' or target != 'cuda': pass\n"  # a device type, no engine: not a test
        "if x.device.type in ('cpu', 'meta'): pass\n"
    )
    assert engine_tests(path, tmp_path) == [
        "sample.py:1: config.engine == 'fake'",
        "sample.py:2: options.get('engine', 'fake') != 'cuda'",
        "sample.py:3: engine in ('cpu', 'cuda')",
        "sample.py:4: 'fake' == name",
    ]
