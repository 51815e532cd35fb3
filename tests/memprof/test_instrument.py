"""The instruments on toy modules: saved bytes computed by hand, storages counted once, parameters
excluded, categories from the saving node, the live timeline's split of the peak, and ``track``."""

import dataclasses

import pandas as pd
import pytest
import torch
from torch import nn

import memprof
from memprof.instrument import categories
from memprof.instrument.session import Instrument
from memprof.results.result import CATEGORIES, LAYER_COLUMNS

F32 = 4


class Fn(nn.Module):
    """A module whose forward is ``fn(x)``: the unit under test for raw operators."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def step(model, x, optimizer=None, loss=lambda out: out.sum()):
    """One instrumented step with explicit phases, as the engines run it; returns the measurement."""
    inst = Instrument(model, optimizer)
    with inst:
        inst.begin_forward(x)
        value = loss(model(x))
        inst.begin_backward(value)
        value.backward()
        inst.begin_optimizer()
        if optimizer is not None:
            optimizer.step()
        inst.end()
        del value
    return inst.measurement


def layer(m, module):
    rows = m.layers[m.layers["module"] == module]
    assert len(rows) == 1, f"no single row for {module!r}: {m.layers['module'].tolist()}"
    return rows.iloc[0]


# -- one storage, one allocation -----------------------------------------------------------------


def test_square_saves_one_storage():
    x = torch.randn(64, 32, requires_grad=True)
    m = step(Fn(lambda x: x * x), x)  # MulBackward0 saves self and other: the same tensor twice
    assert m.memory.saved_activations == x.nbytes == 64 * 32 * F32


def test_views_and_repeated_saves_add_nothing():
    x = torch.randn(64, 32, requires_grad=True)
    # x * x.t().t() saves a view of x; sin saves x again; x[::2] * x[1::2] saves two strided views of it.
    m = step(Fn(lambda x: (x * x.t().t()).sum() + x.sin().sum() + (x[::2] * x[1::2]).sum()), x)
    assert m.memory.saved_activations == x.nbytes


def test_dead_saves_are_not_counted():
    x = torch.randn(64, 32, requires_grad=True)

    def forward(x):
        # ExpBackward0 saves its own result, but the graph is dropped at once: what the pack hook
        # returns must not keep it (a saved output kept with its grad_fn would be a reference cycle).
        x.exp().sum()
        return x * 2  # saves nothing (a Python scalar)

    m = step(Fn(forward), x)
    assert m.memory.saved_activations == 0


def test_frozen_weights_are_parameters_not_activations():
    lin = nn.Linear(32, 16, bias=False)
    lin.weight.requires_grad_(False)
    x = torch.randn(8, 32, requires_grad=True)
    m = step(lin, x)  # MmBackward0 keeps the (frozen) weight for the input's gradient, not x
    assert m.memory.saved_activations == 0
    assert m.memory.parameters == 16 * 32 * F32


def test_trainable_weights_are_parameters_not_activations():
    lin = nn.Linear(32, 16, bias=False)
    x = torch.randn(8, 32, requires_grad=True)
    m = step(lin, x)  # saves x (for the weight's gradient) and the weight (for x's): only x counts
    assert m.memory.saved_activations == x.nbytes


# -- a hand-built model --------------------------------------------------------------------------


def test_hand_built_model_saves_what_the_hand_computes():
    torch.manual_seed(0)
    B, D_IN, D_HID, D_OUT = 8, 16, 32, 4
    model = nn.Sequential(nn.Linear(D_IN, D_HID), nn.ReLU(), nn.Dropout(0.5), nn.Linear(D_HID, D_OUT))
    x = torch.randn(B, D_IN)
    m = step(model, x, torch.optim.AdamW(model.parameters()))
    expected = (
        pd.DataFrame(
            [
                # Linear 0 keeps its input for the weight's gradient.
                {"module": "0", "saved_bytes": B * D_IN * F32, "linear_input": B * D_IN * F32},
                # ReLU keeps its output.
                {"module": "1", "saved_bytes": B * D_HID * F32, "activation_fn": B * D_HID * F32},
                # CPU dropout keeps its mask, a float tensor (input * bernoulli(1 - p) / (1 - p)).
                {"module": "2", "saved_bytes": B * D_HID * F32, "dropout_mask": B * D_HID * F32},
                # Linear 3 keeps its input, the dropout's output.
                {"module": "3", "saved_bytes": B * D_HID * F32, "linear_input": B * D_HID * F32},
            ],
            columns=list(LAYER_COLUMNS),
        )
        .fillna(0)
        .astype({c: "int64" for c in LAYER_COLUMNS[1:]})
    )
    pd.testing.assert_frame_equal(m.layers.reset_index(drop=True), expected)
    assert m.memory.saved_activations == (B * D_IN + 3 * B * D_HID) * F32
    params = sum(p.nbytes for p in model.parameters())
    assert m.memory.parameters == params
    mem = m.memory
    assert mem.parameters + mem.gradients + mem.optimizer_state + mem.activations_at_peak + mem.temporaries == mem.peak


def test_optimizer_state_and_gradients_at_an_optimizer_peak():
    # Big weights, a one-row batch: the peak is AdamW's step, with every gradient and all state live.
    model = nn.Linear(256, 256)
    opt = torch.optim.AdamW(model.parameters(), foreach=False)
    m = step(model, torch.randn(1, 256), opt)
    params = sum(p.nbytes for p in model.parameters())
    assert m.memory.gradients == params
    # exp_avg and exp_avg_sq per parameter, plus one float32 step counter each.
    assert m.memory.optimizer_state == 2 * params + 2 * F32
    assert m.memory.peak >= 4 * params


# -- categories ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "node, random_mask, expected",
    [
        ("AddmmBackward0", False, "linear_input"),
        ("MmBackward0", False, "linear_input"),
        ("BmmBackward0", False, "attention_scores"),
        ("ScaledDotProductEfficientAttentionBackward0", False, "attention_scores"),
        ("ScaledDotProductFlashAttentionBackward0", False, "attention_scores"),
        ("ScaledDotProductFlashAttentionForCpuBackward0", False, "attention_scores"),
        ("SoftmaxBackward0", False, "softmax_output"),
        ("LogSoftmaxBackward0", False, "softmax_output"),
        ("NativeDropoutBackward0", False, "dropout_mask"),
        ("MulBackward0", True, "dropout_mask"),
        ("MulBackward0", False, "other"),
        ("NativeLayerNormBackward0", False, "normalization"),
        ("GeluBackward0", False, "activation_fn"),
        ("ReluBackward0", False, "activation_fn"),
        ("TanhBackward0", False, "activation_fn"),
        ("EmbeddingBackward0", False, "embedding"),
        ("_ReversibleFunctionBackward", False, "other"),
        (None, False, "other"),
    ],
)
def test_category_of_node(node, random_mask, expected):
    assert categories.category(node, random_mask=random_mask) == expected
    assert expected in CATEGORIES


def test_categories_come_from_the_saving_operator():
    emb, ln = nn.Embedding(10, 8), nn.LayerNorm(8)
    ids = torch.tensor([[1, 2, 3, 4]])

    def forward(ids):
        h = ln(emb(ids))  # (1, 4, 8)
        return torch.softmax(h @ h.transpose(1, 2), -1).sum() + nn.functional.gelu(h).sum()

    model = nn.ModuleDict({"emb": emb, "ln": ln})
    model.forward = forward
    m = step(model, ids)
    by_module = m.layers.set_index("module")
    assert by_module.loc["emb", "embedding"] == ids.nbytes
    assert by_module.loc["ln", "normalization"] == 4 * 8 * F32 + 2 * 4 * F32  # input, mean, rstd
    root = by_module.loc[""]
    assert root["softmax_output"] == 4 * 4 * F32
    assert root["activation_fn"] == 0  # gelu keeps h, which the matmul saved first
    assert root["attention_scores"] == 4 * 8 * F32  # the batched product keeps h (and its transpose: a view)


def test_category_of_node_and_dtype():
    # MEFT's reversible node saves its kept bits as uint8, next to its integer streams and int64 checksums.
    assert categories.category("_ReversibleFunctionBackward", torch.uint8) == "reversible_bits"
    assert categories.category("_ReversibleFunctionBackward", torch.int64) == "other"
    assert categories.category("_ReversibleFunctionBackward", torch.float32) == "other"
    assert categories.category("MulBackward0", torch.uint8) == "other"
    assert categories.category("AddmmBackward0", torch.uint8) == "linear_input"
    assert categories.category("_ReversibleFunctionBackward", torch.uint8, random_mask=True) == "dropout_mask"


class _ReversibleFunction(torch.autograd.Function):
    """Saves what meft's reversible Function saves, by kind: a float stream, an int64 checksum and
    uint8 kept bits (the node is named ``_ReversibleFunctionBackward`` after the class)."""

    @staticmethod
    def forward(ctx, x):
        bits = torch.zeros(x.shape, dtype=torch.uint8)
        ctx.save_for_backward(x * 2, torch.zeros(4, dtype=torch.int64), bits, bits[:2])  # a view adds nothing
        return x * 3

    @staticmethod
    def backward(ctx, grad):
        return grad * 3


def test_reversible_bits_are_the_uint8_tensors_of_the_reversible_node():
    x = torch.randn(8, 16, requires_grad=True)
    m = step(Fn(_ReversibleFunction.apply), x)
    row = layer(m, "")
    assert row["reversible_bits"] == 8 * 16
    assert row["other"] == 8 * 16 * F32 + 4 * 8
    assert m.memory.saved_activations == 8 * 16 * (F32 + 1) + 4 * 8


# -- what the hooks cannot see ------------------------------------------------------------------


class _KeepOnCtx(torch.autograd.Function):
    """Keeps its input as a ctx attribute (not save_for_backward): invisible to saved-tensor hooks."""

    @staticmethod
    def forward(ctx, x):
        ctx.kept = x.detach().clone()
        return x * 1

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.kept.sign().abs()


def test_tensors_kept_on_ctx_are_unattributed():
    x = torch.randn(32, 16, requires_grad=True)
    m = step(Fn(lambda x: _KeepOnCtx.apply(x)), x)
    assert m.memory.saved_activations == 0
    # Alive when backward starts and saved by no one: the copy on ctx, the batch itself, the loss.
    assert m.memory.unattributed == x.nbytes + x.nbytes + F32
    assert m.live.forward_end_activations == m.memory.unattributed


# -- track: the user's own loop -----------------------------------------------------------------


def test_track_matches_the_engine_driven_step():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.LayerNorm(32), nn.Linear(32, 2))
    x = torch.randn(8, 16)
    opt = torch.optim.AdamW(model.parameters(), foreach=False)
    reference = step(model, x, opt)
    model.zero_grad(set_to_none=True)
    opt = torch.optim.AdamW(model.parameters(), foreach=False)
    with memprof.track(model, opt, name="toy") as prof:
        loss = model(x).sum()
        loss.backward()
        opt.step()
        del loss
    r = prof.result
    assert list(r.layers.columns) == list(LAYER_COLUMNS)
    pd.testing.assert_frame_equal(r.layers, reference.layers)
    # The same step, byte for byte, but for one float32 scalar: the seed gradient backward() makes
    # before autograd runs, which track counts with the forward and the engines with backward.
    for name, value in dataclasses.asdict(r.memory).items():
        expected = getattr(reference.memory, name)
        assert value is None and expected is None or abs(value - expected) <= F32, name
    assert r.memory.saved_activations == reference.memory.saved_activations
    assert (r.backbone, r.engine, r.target, r.batch_size) == ("toy", "track", "cpu", 8)
    assert r.trainable_params == sum(p.numel() for p in model.parameters())


def test_track_without_optimizer_and_exception_propagates():
    model = nn.Linear(4, 4)
    with memprof.track(model) as prof:
        model(torch.randn(2, 4, requires_grad=True)).sum().backward()
    assert prof.result.memory.saved_activations == 2 * 4 * F32
    with pytest.raises(ZeroDivisionError):
        with memprof.track(model) as prof:
            1 / 0  # noqa: B018 - the error is the point
    assert prof.result is None


def test_a_forward_without_backward_is_measured_as_what_it_saved_and_says_so():
    torch.manual_seed(0)
    B, D_IN, D_HID = 8, 16, 32
    model = nn.Sequential(nn.Linear(D_IN, D_HID), nn.ReLU(), nn.Linear(D_HID, 4))
    x = torch.randn(B, D_IN)
    with memprof.track(model) as prof:
        out = model(x)
    r = prof.result
    # Linear 0 keeps its input, ReLU its output, Linear 2 its input (the ReLU's output, the same storage)
    assert r.memory.saved_activations == (B * D_IN + B * D_HID) * F32
    assert r.memory.gradients == 0
    assert r.message.startswith("the block ran no backward: the figures are its forward's")
    assert out.grad_fn is not None  # the block's graph is the caller's, untouched
    with memprof.track(model) as prof:  # a whole step says nothing
        model(x).sum().backward()
    assert prof.result.message == ""


def test_a_model_without_a_batch_input_records_what_it_can_and_its_file_reads_back(tmp_path):
    from memprof.results.result import ResultSet, load_results, write_json

    model = nn.Linear(4, 4)
    with memprof.track(model, name="vector") as prof:
        model(torch.randn(4)).sum().backward()
    r = prof.result
    assert (r.seq_len, r.batch_size) == (0, 0)
    assert r.message == "no input of shape (batch, seq, ...) was seen: seq_len and batch_size are recorded as 0"
    assert r.memory.saved_activations == 4 * F32  # the input, kept for the weight's gradient
    path = write_json(ResultSet([r]), tmp_path / "results.json")
    (back,) = load_results(path).results
    assert back.to_dict() == r.to_dict()
