"""A tiny MEFT model through transformers.Trainer under ``accelerate launch`` on 2 CPU processes
(gloo): it trains, saves a checkpoint, and a run resumed from that checkpoint ends where the
uninterrupted run does (tests/meft/distributed_trainer.py runs in each process).

The launch is ``accelerate launch --multi_gpu --num_processes 2`` with ``ACCELERATE_USE_CPU=1`` (and
``use_cpu=True`` in the TrainingArguments): accelerate 1.x sends ``--cpu`` with several processes to
``mpirun``, which a machine without MPI lacks; this form starts them with torch's own launcher and
accelerate picks the CPU and gloo, as the test checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from meft_testing import free_port
from safetensors.torch import load_file

pytest.importorskip("accelerate")
HERE = Path(__file__).parent


def test_accelerate_launch_on_two_cpu_processes_saves_and_resumes(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    env.update(OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="1")
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    command += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    # not the default 29500 another run may hold (a port free now could be taken before the launch binds
    # it: unlikely enough on one machine)
    command += ["--main_process_port", str(free_port())]
    done = subprocess.run(
        [*command, str(HERE / "distributed_trainer.py"), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    outcome = json.loads((tmp_path / "outcome.json").read_text())
    assert outcome["world_size"] == [2, 2] and outcome["backend"] == "gloo"
    assert outcome["steps"] == [4, 4]
    assert outcome["equal"] == outcome["trained"] and outcome["trained"]  # bit-identical after the resume
    assert outcome["losses"][0] == outcome["losses"][1] and len(outcome["losses"][0]) == 4
    checkpoint = tmp_path / "cut" / "checkpoint-2"
    saved = load_file(str(checkpoint / "model.safetensors"))
    assert sorted(saved) == outcome["trained"]  # only what trains, written once by rank 0
    assert sorted(p.name for p in checkpoint.glob("rng_state*.pth")) == ["rng_state_0.pth", "rng_state_1.pth"]
