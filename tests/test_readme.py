"""The README's Python API example runs as written and measures what it says."""

import re
from pathlib import Path

README = Path(__file__).parents[1] / "README.md"


def test_python_api_example_runs():
    text = README.read_text()
    section = text[text.index("## Python API") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    result, prof = namespace["result"], namespace["prof"]
    assert result.status == "ok" and result.memory.peak_activations > 0
    assert prof.result.memory.saved_activations == int(prof.result.layers["saved_bytes"].sum())
    assert prof.result.memory.saved_activations > 0


def test_readme_has_the_two_setup_commands():
    text = README.read_text()
    setup = text[text.index("## Set up") : text.index("## Quickstart")]
    assert "memprof compare" in setup and "python -m pytest -q" in setup
    assert "python -m pytest -q" in (Path(__file__).parents[1] / ".ci" / "run").read_text()


def test_public_api_names_resolve():
    import memprof
    from memprof.checks.budget import assert_memory
    from memprof.engines import profile
    from memprof.instrument.session import track

    assert (memprof.profile, memprof.track, memprof.assert_memory) == (profile, track, assert_memory)
