"""The PEFT field (ia3, prefix, dora, adapter-pfeiffer, bitfit, top-k, lst): trainable parameters
counted by hand, gradients that reach exactly them, what the frozen backbone saves, and the refusals."""

import json

import pytest
import torch

from memprof import methods
from memprof.engines import run
from memprof.engines.config import ProfileConfig
from memprof.errors import MemprofError
from memprof.instrument.params import count_params
from memprof.models import backbones
from memprof.models.tasks import build_model, make_batch

FIELD = ["ia3", "prefix", "dora", "adapter-pfeiffer", "bitfit", "top-k", "lst"]
H, HEADS, FFN, LAYERS, HEAD = 32, 2, 64, 4, 32 * 2 + 2  # HEAD: a linear classifier, 2 labels
_DECODER = dict(
    hidden_size=H,
    num_hidden_layers=LAYERS,
    num_attention_heads=HEADS,
    num_key_value_heads=1,
    head_dim=H // HEADS,
    intermediate_size=FFN,
    max_position_embeddings=64,
)
SHRINK = {
    "bert": dict(hidden_size=H, num_hidden_layers=LAYERS, num_attention_heads=HEADS, intermediate_size=FFN),
    "roberta": dict(hidden_size=H, num_hidden_layers=LAYERS, num_attention_heads=HEADS, intermediate_size=FFN),
    "bart": dict(
        d_model=H,
        encoder_layers=LAYERS,
        decoder_layers=LAYERS,
        encoder_attention_heads=HEADS,
        decoder_attention_heads=HEADS,
        encoder_ffn_dim=FFN,
        decoder_ffn_dim=FFN,
    ),
    "opt": dict(hidden_size=H, num_hidden_layers=LAYERS, num_attention_heads=HEADS, ffn_dim=FFN, word_embed_proj_dim=H),
    "llama": _DECODER,
    "qwen2": {**_DECODER, "sliding_window": 64, "max_window_layers": LAYERS},
    "mistral": {**_DECODER, "sliding_window": 64},
    "gpt2": dict(n_embd=H, n_layer=LAYERS, n_head=HEADS, n_positions=64, n_ctx=64),
}
BUILTIN = {
    "bert": "bert-base",
    "roberta": "roberta-base",
    "bart": "bart-base",
    "opt": "opt-125m",
    "llama": "llama-3.2-1b",
    "qwen2": "qwen2.5-0.5b",
    "mistral": "mistral-7b",
    "gpt2": "gpt2",
}
NO_BIASES = ("llama", "mistral")


def tiny(family: str) -> backbones.Backbone:
    config = {**backbones.builtin()[BUILTIN[family]], **SHRINK[family], "vocab_size": 64}
    return backbones.Backbone(name=f"tiny-{family}", family=family, config=config)


def converted(family: str, method: str, task: str = "classification", device="cpu"):
    bb = tiny(family)
    torch.manual_seed(0)
    return methods.get(method).apply(build_model(bb, task, device=device, pretrained=False), bb, task)


def test_the_field_is_registered_before_meft_with_what_trains():
    names = methods.names()
    assert set(FIELD) <= set(names)
    assert max(names.index(m) for m in FIELD) < names.index("meft1")
    assert all(methods.get(m).trains for m in FIELD)


# -- trainable parameters, counted by hand (tiny BERT: hidden 32, 2 heads, feed-forward 64, 4 layers) --

LINEAR = H * H + H  # a hidden x hidden Linear with bias
BERT_LAYER = 4 * LINEAR + (H * FFN + FFN) + (FFN * H + H) + 2 * 2 * H  # q, k, v, o; FFN in, out; two LayerNorms
SIDE = H // 8  # LST's side width
SIDE_LAYER = (
    (3 * SIDE * SIDE + 3 * SIDE)
    + (SIDE * SIDE + SIDE)
    + (SIDE * 4 * SIDE + 4 * SIDE)
    + (4 * SIDE * SIDE + SIDE)
    + 2 * 2 * SIDE
)  # attention in/out projections, feed-forward, two LayerNorms
BERT_COUNTS = {
    # key and value scaled on their outputs; both "output.dense" (attention's and the FFN's) on their inputs
    "ia3": LAYERS * (H + H + H + FFN),
    "prefix": 20 * LAYERS * 2 * H,  # 20 keys and 20 values per layer, all heads
    "dora": LAYERS * 2 * (8 * H + H * 8 + H),  # query and value: A, B and a magnitude per output feature
    "adapter-pfeiffer": LAYERS * ((H * 2 + 2) + (2 * H + H)),  # one adapter per layer, bottleneck 32 / 16 = 2
    # per layer q, k, v, o, both LayerNorms, FFN in and out; the embeddings' LayerNorm and the pooler
    "bitfit": LAYERS * (4 * H + 2 * H + FFN + H) + H + H,
    "top-k": 1 * BERT_LAYER,  # ceil(4 / 4) = 1 layer
    # downsamplers, 3 gates, 4 side layers, the upsampler
    "lst": LAYERS * (H * SIDE + SIDE) + (LAYERS - 1) + LAYERS * SIDE_LAYER + (SIDE * H + H),
}


@pytest.mark.parametrize("method", FIELD)
def test_trainable_parameters_counted_by_hand(method):
    trainable, total = count_params(converted("bert", method, device="meta"))
    assert trainable == BERT_COUNTS[method] + HEAD


def test_prefix_counts_the_key_value_heads_of_grouped_query_attention():
    trainable, _ = count_params(converted("llama", "prefix", device="meta"))
    assert trainable == 20 * LAYERS * 2 * (1 * H // HEADS) + H * 2  # one key/value head of 16; score has no bias


def test_top_k_of_an_encoder_decoder_is_the_decoders_top():
    model = converted("bart", "top-k", device="meta")
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith(("model.decoder.layers.3.", "classification_head.")) for n in trainable)
    assert any(n.startswith("model.decoder.layers.3.") for n in trainable)


# -- gradients reach exactly the trainable parameters, on every family ---------------------------------

# softmax ignores a shift shared by every key, so a separate key bias gets an exactly zero gradient
ZERO_BY_DESIGN = ("key.bias", "k_proj.bias")


@pytest.mark.matrix(keep=lambda p: p["family"] in ("bert", "llama") or p["method"] == "ia3")
@pytest.mark.parametrize("method", FIELD)
@pytest.mark.parametrize("family", list(SHRINK))
def test_gradient_reaches_only_the_trainable_parameters(family, method):
    if method == "bitfit" and family in NO_BIASES:
        pytest.skip("refused: test_bitfit_refuses_a_family_without_biases")
    bb = tiny(family)
    model = converted(family, method)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    with torch.no_grad():  # zero-initialised factors (LoRA's B, adapters' up) would zero the others' gradients
        for p in trainable.values():
            p.add_(0.1 * torch.randn_like(p))
    model(**make_batch(bb, "classification", 2, 8)).loss.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == set(trainable)
    zero = [n for n, p in trainable.items() if not p.grad.abs().sum() > 0 and not n.endswith(ZERO_BY_DESIGN)]
    assert not zero


@pytest.mark.parametrize(
    "method, family, task",
    [
        ("prefix", "opt", "causal-lm"),
        ("prefix", "bart", "seq2seq"),
        ("lst", "gpt2", "causal-lm"),
        ("lst", "bart", "seq2seq"),
    ],
)
def test_generation_tasks_train(method, family, task):
    bb = tiny(family)
    model = converted(family, method, task)
    model(**make_batch(bb, task, 2, 8)).loss.backward()
    assert {n for n, p in model.named_parameters() if p.grad is not None} == {
        n for n, p in model.named_parameters() if p.requires_grad
    }


def test_prefix_changes_what_the_model_computes():
    bb = tiny("bert")
    model = converted("bert", "prefix").eval()
    batch = make_batch(bb, "classification", 2, 8)
    batch.pop("labels")
    before = model(**batch).logits
    with torch.no_grad():
        model.prefix_tuning.weight.mul_(3.0)
    assert not torch.allclose(model(**batch).logits, before)


@pytest.mark.parametrize("method", ["lst", "prefix"])
def test_padding_stays_unseen(method):
    # what a padded position holds changes nothing for the others (LST's side network masks it too)
    bb = tiny("bert")
    model = converted("bert", method).eval()
    batch = make_batch(bb, "classification", 2, 8)
    batch.pop("labels")
    batch["attention_mask"] = torch.ones(2, 8, dtype=torch.long)
    batch["attention_mask"][0, 5:] = 0
    before = model(**batch).logits
    batch["input_ids"][0, 5:] = 7
    torch.testing.assert_close(model(**batch).logits, before)
    batch["input_ids"][0, 4] = 7  # a position that is attended
    assert not torch.allclose(model(**batch).logits[0], before[0])


# -- what the frozen backbone saves (the profiler) --------------------------------------------------


@pytest.fixture(scope="module")
def tiny_paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("field")
    paths = {}
    for family in ("bert", "bart", "llama"):
        (root / family).mkdir()
        (root / family / "config.json").write_text(json.dumps(tiny(family).config))
        paths[family] = str(root / family)
    return paths


def saved_under(result, prefix: str) -> int:
    rows = result.layers[result.layers["module"].str.startswith(prefix)]
    return int(rows["saved_bytes"].sum())


@pytest.mark.parametrize(
    "family, stacks",
    [
        ("bert", ("bert.encoder.layer",)),
        ("bart", ("model.encoder.layers", "model.decoder.layers")),
        ("llama", ("model.layers",)),
    ],
)
def test_lst_backbone_saves_nothing(tiny_paths, family, stacks):
    lst = run(ProfileConfig(tiny_paths[family], "lst", 8, 2, engine="cpu"))
    ft = run(ProfileConfig(tiny_paths[family], "ft", 8, 2, engine="cpu"))
    for stack in stacks:
        assert saved_under(ft, stack) > 0  # what full fine-tuning keeps there
        assert saved_under(lst, stack) == 0
    assert saved_under(lst, "lst_side") > 0  # the side network keeps its own graph
    # each downsampler keeps its input: one backbone layer output (B, S, H) in fp32
    assert lst.layers.set_index("module").loc["lst_side.down.0", "linear_input"] == 2 * 8 * H * 4


def test_top_k_saves_nothing_below_its_layers(tiny_paths):
    r = run(ProfileConfig(tiny_paths["bert"], "top-k", 8, 2, engine="cpu"))
    for i in range(LAYERS - 1):
        assert saved_under(r, f"bert.encoder.layer.{i}.") == 0
    assert saved_under(r, f"bert.encoder.layer.{LAYERS - 1}.") > 0


# -- refusals ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", NO_BIASES)
def test_bitfit_refuses_a_family_without_biases(family):
    with pytest.raises(MemprofError) as err:
        converted(family, "bitfit", device="meta")
    message = str(err.value)
    assert "\n" not in message
    assert message == (
        f"method bitfit trains bias terms and this {family} model has none outside its head; "
        "bitfit supports the families with biases: bart, bert, gpt2, opt, qwen2, roberta: use one "
        "of them"
    )


def test_bitfit_refusal_is_one_line_at_the_command_line(cli, tiny_paths):
    code, out, err = cli(
        "profile",
        "--backbone",
        tiny_paths["llama"],
        "--method",
        "bitfit",
        "--seq-len",
        "8",
        "--batch-size",
        "2",
        "--engine",
        "cpu",
    )
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "bart, bert, gpt2, opt, qwen2, roberta" in err


def test_compare_takes_the_whole_field(cli, stub_plots, tmp_path):
    code, out, err = cli(
        "compare",
        "--methods",
        ",".join(["ft", *FIELD]),
        "--seq-lens",
        "128",
        "--batch-sizes",
        "2",
        "--out",
        "run",
        "--quiet",
    )
    assert code == 0, err
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert [r["method"] for r in saved["results"]] == ["ft", *FIELD]


# -- memprof methods --backbone: how many parameters each method trains --------------------------------


def test_methods_listing_counts_what_each_method_trains(cli, tiny_paths):
    code, out, err = cli("methods", "--backbone", tiny_paths["bert"], "--json")
    assert code == 0, err
    entries = {e["name"]: e for e in json.loads(out)}
    assert {m: entries[m]["trainable_params"] for m in FIELD} == {m: BERT_COUNTS[m] + HEAD for m in FIELD}
    _, total = count_params(converted("bert", "ft", device="meta"))
    assert entries["ft"]["trainable_params"] == total and entries["ft"]["unsupported"] is None


def test_methods_listing_names_the_methods_a_family_does_not_support(cli, tiny_paths):
    code, out, _ = cli("methods", "--backbone", tiny_paths["llama"], "--json")
    entries = {e["name"]: e for e in json.loads(out)}
    assert code == 0 and entries["bitfit"]["trainable_params"] is None
    assert entries["bitfit"]["unsupported"].startswith("method bitfit trains bias terms and this llama model has none")
    assert [m for m, e in entries.items() if e["unsupported"]] == ["bitfit"]
    code, out, _ = cli("methods", "--backbone", tiny_paths["llama"])
    bitfit = next(line for line in out.splitlines() if line.startswith("bitfit "))
    assert code == 0 and bitfit.endswith("  not supported")


def test_methods_task_without_a_backbone_is_one_line(cli):
    code, out, err = cli("methods", "--task", "seq2seq")
    assert code == 2 and err.strip() == (
        "error: --task counts parameters on a backbone; pass --backbone too (memprof backbones lists them)"
    )
