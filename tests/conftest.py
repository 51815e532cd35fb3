"""The everyday suite and the long matrices.

NOTE [ Everyday and long ]
``python -m pytest -q`` (the README's command) runs every feature in minutes; ``python -m pytest -q
-m long`` runs the rest of the long matrices (every method on every backbone, the 24-layer dtype
matrix, ...), and ``.ci/run`` runs both, so CI still runs every case. A test function marked
``@pytest.mark.matrix(keep=...)`` is such a matrix: the cases ``keep`` selects run every day, every
other case is marked ``long``, which the default options deselect (pyproject.toml: ``-m "not
long"``; a ``-m`` on the command line replaces it). ``keep`` is a number (the first that many cases,
in collection order) or a function of the case's parameters (``item.callspec.params``) that says
whether it is kept. So every matrix still runs somewhere every day, on the cases chosen to cover
each feature, and the two runs together are the whole suite.
"""

from __future__ import annotations

from collections import Counter

import pytest

pytest_plugins = ("pytester",)  # tests/test_suite_split.py runs a small suite through this hook


@pytest.hookimpl(tryfirst=True)  # before the mark plugin deselects by ``-m``
def pytest_collection_modifyitems(config, items):
    seen: Counter = Counter()
    kept_any: dict = {}
    for item in items:
        marker = item.get_closest_marker("matrix")
        if marker is None:
            continue
        keep = marker.kwargs.get("keep", 1)
        key = (item.path, item.originalname)
        seen[key] += 1
        params = getattr(getattr(item, "callspec", None), "params", {})
        kept = bool(keep(params) if callable(keep) else seen[key] <= keep)
        kept_any[key] = kept_any.get(key, False) or kept
        if not kept:
            item.add_marker(pytest.mark.long)
    if none := sorted(f"{path.name}::{name}" for (path, name), kept in kept_any.items() if not kept):
        raise pytest.UsageError(f"the matrices {none} keep no case for the everyday run; widen their keep=")


@pytest.fixture(autouse=True, scope="session")
def own_formula_cache(tmp_path_factory):
    """The formula cache of this run, never the user's (inherited by the commands tests start)."""
    import os

    before = os.environ.get("MEMPROF_CACHE_DIR")
    os.environ["MEMPROF_CACHE_DIR"] = str(tmp_path_factory.mktemp("formula-cache"))
    yield
    if before is None:
        os.environ.pop("MEMPROF_CACHE_DIR", None)
    else:
        os.environ["MEMPROF_CACHE_DIR"] = before
