"""MEFT under PyTorch's distributed engines: a converted model trained by 2 processes (CPU, gloo)
gets, after one step, the gradients one process gets on the concatenated batch.

DDP: its reducer hooks the AccumulateGrad node of every trainable parameter; MEFT's reversible
Function returns the parameters' gradients from its backward (NOTE [ Why the trainable parameters
are inputs of the Function ] in meft/reversible.py), so they reach those nodes as any gradient
does and are all-reduced (averaged) like an ordinary model's. Each rank's loss is the mean over
its half of the batch, so the average of the two is the mean over the whole batch.

FSDP2 (``torch.distributed.fsdp.fully_shard``): the parameters are sharded DTensors between steps
and gathered around forward and backward; the reversible Function reads the layers' parameters at
each call (``Coupling.trainable_parameters``), so it sees the gathered ones, and the reduce-scatter
leaves each rank the shard of the averaged gradient.

Dropout is off, the model's and the adapters' (the two ranks would draw other masks than the single
process; the forward would no longer split over the batch); float64, so the
only difference is the order of the sums (all-reduce vs one batch): compared to 1e-12.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from meft_testing import batch_for, free_port, grads_after_step, relative_error, tiny_model

import meft
from meft.convert import stacks

CASE, WORLD, PER_RANK = "bert-cls", 2, 2


def converted_model():
    model = tiny_model(CASE, dtype=torch.float64, dropout=0.0, seed=0)
    torch.manual_seed(1)
    model = meft.convert(model, meft.MEFTConfig(variant="meft1", adapter_dropout=0.0))
    assert [stack.reversible_layers for _, stack in stacks(model)] == [2]  # both layers are reversible
    return model


def whole_batch():
    return batch_for(CASE, seed=3, batch=WORLD * PER_RANK)


def _ddp_step(model, half) -> dict[str, torch.Tensor]:
    ddp = torch.nn.parallel.DistributedDataParallel(model)  # held: its reducer all-reduces during backward
    ddp(**half).loss.backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _fsdp2_step(model, half) -> dict[str, torch.Tensor]:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    fully_shard(model, mesh=init_device_mesh("cpu", (WORLD,)))
    model(**half).loss.backward()
    return {n: p.grad.full_tensor().detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _worker(rank: int, port: int, out: str) -> None:
    """One rank: a step under DDP, then one under FSDP2 (each on a fresh model), gradients saved."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        half = {k: v[rank * PER_RANK : (rank + 1) * PER_RANK] for k, v in whole_batch().items()}
        for engine, step in (("ddp", _ddp_step), ("fsdp2", _fsdp2_step)):
            torch.save(step(converted_model(), half), Path(out) / f"{engine}-rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Path:
    """The folder of both engines' per-rank gradients (one spawn of 2 processes for both)."""
    out = tmp_path_factory.mktemp("distributed")
    sys.path.insert(0, str(Path(__file__).parent))  # the spawned processes import this module by name
    mp.spawn(_worker, args=(free_port(), str(out)), nprocs=WORLD, join=True)
    return out


def ranks_of(folder: Path, engine: str) -> list[dict[str, torch.Tensor]]:
    return [torch.load(folder / f"{engine}-rank{r}.pt") for r in range(WORLD)]


def check_equal_to_one_process(ranks: list[dict[str, torch.Tensor]]) -> None:
    _, expected = grads_after_step(converted_model(), whole_batch())
    assert len(expected) > 0
    for grads in ranks:
        assert grads.keys() == expected.keys()
        for name, g in expected.items():
            assert relative_error(grads[name], g) < 1e-12, name
    assert all(torch.equal(ranks[0][n], ranks[1][n]) for n in expected)  # every rank holds the same average


def test_ddp_gradients_equal_one_process_on_the_whole_batch(two_ranks):
    check_equal_to_one_process(ranks_of(two_ranks, "ddp"))


def test_fsdp2_gradients_equal_one_process_on_the_whole_batch(two_ranks):
    check_equal_to_one_process(ranks_of(two_ranks, "fsdp2"))
