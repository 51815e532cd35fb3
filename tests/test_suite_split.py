"""The everyday run and ``-m long`` split every matrix's cases between them (tests/conftest.py,
NOTE [ Everyday and long ]): together they run each case once, and the everyday run keeps the cases
``keep`` names."""

from __future__ import annotations

from pathlib import Path

CONFTEST = (Path(__file__).parent / "conftest.py").read_text().replace('pytest_plugins = ("pytester",)', "")
INI = """
[pytest]
addopts = -m "not long"
markers =
    matrix: a matrix
    long: a left-out case
"""
SUITE = """
import pytest

@pytest.mark.matrix(keep=lambda p: p["family"] == "bert" or p["method"] == "ft")
@pytest.mark.parametrize("method", ["ft", "lora", "meft1"])
@pytest.mark.parametrize("family", ["bert", "opt", "llama"])
def test_grid(family, method):
    pass

@pytest.mark.matrix(keep=2)
@pytest.mark.parametrize("layers", [6, 12, 24])
def test_depths(layers):
    pass

def test_plain():
    pass
"""


def _passed(pytester, *args) -> set[str]:
    result = pytester.runpytest("-q", "-rA", *args)
    return {line.split("::", 1)[1] for line in result.outlines if line.startswith("PASSED")}


def test_the_two_runs_partition_every_case(pytester):
    pytester.makeconftest(CONFTEST)
    pytester.makeini(INI)
    pytester.makepyfile(test_suite=SUITE)
    everyday, long = _passed(pytester), _passed(pytester, "-m", "long")
    assert everyday == {
        "test_grid[bert-ft]", "test_grid[bert-lora]", "test_grid[bert-meft1]", "test_grid[opt-ft]",
        "test_grid[llama-ft]", "test_depths[6]", "test_depths[12]", "test_plain",
    }  # fmt: skip
    assert long == {"test_grid[opt-lora]", "test_grid[opt-meft1]", "test_grid[llama-lora]", "test_grid[llama-meft1]",
                    "test_depths[24]"}  # fmt: skip
    assert not everyday & long


def test_a_matrix_that_keeps_nothing_is_refused(pytester):
    pytester.makeconftest(CONFTEST)
    pytester.makeini(INI)
    pytester.makepyfile(
        test_suite="""
import pytest

@pytest.mark.matrix(keep=lambda p: False)
@pytest.mark.parametrize("x", [1, 2])
def test_nothing_kept(x):
    pass
"""
    )
    result = pytester.runpytest("-q")
    assert result.ret != 0
    assert "the matrices ['test_suite.py::test_nothing_kept'] keep no case for the everyday run" in result.stderr.str()
