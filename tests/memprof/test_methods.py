"""The method registry: trainable parameter counts computed by hand, and what each method freezes."""

import pytest
import torch

from memprof import methods
from memprof.instrument.params import count_params
from memprof.methods.adapter import AdapterSettings, SequentialAdapter, remove_adapters
from memprof.methods.lora import LoraSettings
from memprof.methods.lst import LadderSettings
from memprof.methods.prefix import PrefixSettings
from memprof.methods.topk import TopKSettings
from memprof.models import backbones
from memprof.models.tasks import build_model, make_batch


def tiny(name):
    bb = backbones.resolve(name)
    shrink = {
        "bert": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
        "roberta": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
        "bart": dict(
            d_model=32,
            encoder_layers=2,
            decoder_layers=2,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
        ),
        "opt": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, ffn_dim=64, word_embed_proj_dim=32),
    }[bb.family]
    return backbones.Backbone(
        name=f"tiny-{bb.family}", family=bb.family, config={**bb.config, **shrink, "vocab_size": 128}
    )


def test_registry_has_core_methods():
    assert {"ft", "lora", "adapter", "ft+ckpt", "lora+ckpt"} <= set(methods.names())


def test_ft_trains_everything():
    bb = backbones.resolve("bert-base")
    model = methods.get("ft").apply(build_model(bb, device="meta"), bb, "classification")
    trainable, total = count_params(model)
    assert trainable == total


def test_lora_counts_bert_base():
    bb = backbones.resolve("bert-base")
    model = methods.get("lora").apply(build_model(bb, device="meta"), bb, "classification")
    trainable, _ = count_params(model)
    # query and value of 12 layers: A (8 x 768) + B (768 x 8) each; classifier 768 x 2 + 2.
    assert trainable == 12 * 2 * (8 * 768 + 768 * 8) + 768 * 2 + 2


def test_lora_keeps_bart_head_trainable():
    bb = backbones.resolve("bart-base")
    model = methods.get("lora").apply(build_model(bb, device="meta"), bb, "classification")
    trainable, _ = count_params(model)
    lora = 18 * 2 * (8 * 768 + 768 * 8)  # q, v of 6 encoder self, 6 decoder self, 6 cross attentions
    head = 768 * 768 + 768 + 768 * 2 + 2
    assert trainable == lora + head


def test_adapter_counts_bert_base():
    bb = backbones.resolve("bert-base")
    model = methods.get("adapter").apply(build_model(bb, device="meta"), bb, "classification")
    trainable, _ = count_params(model)
    r, h = 768 // 16, 768
    adapters = 12 * 2 * (h * r + r + r * h + h)
    layer_norms = (12 * 2 + 1) * 2 * h  # two per layer plus the embedding LayerNorm
    head = h * 2 + 2
    assert trainable == adapters + layer_norms + head


@pytest.mark.parametrize("family", ["bert-base", "roberta-base", "bart-base", "opt-125m"])
def test_adapter_starts_at_the_pretrained_function_and_undoes(family):
    bb = tiny(family)
    torch.manual_seed(0)
    model = build_model(bb, pretrained=False).eval()
    batch = make_batch(bb, bb.default_task, 2, 8)
    batch.pop("labels")
    before = model(**batch).logits
    methods.get("adapter").apply(model, bb, bb.default_task)
    assert sum(isinstance(m, SequentialAdapter) for m in model.modules()) == 2 * bb.num_layers
    torch.testing.assert_close(model(**batch).logits, before)  # zero-initialised up projection
    remove_adapters(model)
    assert not any(isinstance(m, SequentialAdapter) for m in model.modules())


@pytest.mark.parametrize("method", ["ft+ckpt", "lora+ckpt"])
def test_checkpointed_methods_match_plain_gradients(method):
    bb = tiny("bert-base")
    base = method.split("+")[0]
    grads = {}
    for name in (base, method):
        torch.manual_seed(0)
        model = build_model(bb, pretrained=False)  # train mode: transformers checkpoints only then
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0  # dropout off, so the two runs see identical activations
        model = methods.get(name).apply(model, bb, "classification")
        calls = []
        attention = next(m for n, m in model.named_modules() if n.endswith("layer.0.attention"))
        attention.register_forward_hook(lambda *_, calls=calls: calls.append(1))
        model(**make_batch(bb, "classification", 2, 8)).loss.backward()
        assert len(calls) == (2 if "ckpt" in name else 1)  # checkpointing recomputes in backward
        grads[name] = {
            n.replace("._checkpoint_wrapped_module", ""): p.grad for n, p in model.named_parameters() if p.requires_grad
        }
    assert grads[base].keys() == grads[method].keys()
    for n in grads[base]:
        torch.testing.assert_close(grads[method][n], grads[base][n])


def test_unknown_method_lists_known():
    with pytest.raises(Exception, match="use one of ft, lora"):
        methods.get("p-tuning")


# -- MEFT ------------------------------------------------------------------------------------------

MEFT_METHODS = ["meft1", "meft2", "meft3", "meft", "meft1-float", "meft2-float", "meft3-float"]
ADAPTER = 768 * 8 + 8 + 8 * 768 + 768  # meft's bottleneck adapter at width 8: down and up, with biases


def test_meft_methods_follow_the_core_ones_in_order():
    names = methods.names()
    assert names[names.index("meft1") :] == MEFT_METHODS


@pytest.mark.parametrize("name", MEFT_METHODS)
def test_meft_methods_set_variant_and_arithmetic(name):
    import meft

    bb = backbones.resolve("bert-base")
    model = methods.get(name).apply(build_model(bb, device="meta"), bb, "classification")
    config = meft.config_of(model)
    variant, _, arithmetic = name.partition("-")
    variant = "meft1" if variant == "meft" else variant
    assert config == meft.MEFTConfig(variant=variant, arithmetic=arithmetic or "exact")
    # the description names the arithmetic and the scales meft really uses: 0.1 is 13/128 in exact arithmetic
    description = methods.get(name).description
    if name != "meft":
        assert f"{config.arithmetic} arithmetic" in description
        assert ("13/128" in description) == (config.arithmetic == "exact")
        assert (
            config.describe_scales()
            == {
                "exact": {
                    "meft1": "lam=13/128 (0.1015625), beta=1",
                    "meft2": "lam=1, beta=13/128 (0.1015625)",
                    "meft3": "lam=13/128 (0.1015625), beta=13/128 (0.1015625)",
                },
                "float": {"meft1": "lam=0.1, beta=1.0", "meft2": "lam=1.0, beta=0.1", "meft3": "lam=0.1, beta=0.1"},
            }[config.arithmetic][config.variant]
        )


@pytest.mark.parametrize("name", MEFT_METHODS)
def test_meft_counts_bert_base(name):
    bb = backbones.resolve("bert-base")
    model = methods.get(name).apply(build_model(bb, device="meta"), bb, "classification")
    trainable, _ = count_params(model)
    # two adapters per layer, except meft1's top layer (merge="plm"): its G adapter never gets a gradient
    adapters = 12 * 2 - (1 if name.startswith("meft1") or name == "meft" else 0)
    assert trainable == adapters * ADAPTER + 768 * 2 + 2  # and the classifier


@pytest.mark.parametrize(
    "name, adapters", [("meft1", 2 * 6 * 2 - 2), ("meft1-float", 2 * 6 * 2 - 2), ("meft3", 2 * 6 * 2)]
)
def test_meft_counts_bart_base(name, adapters):
    bb = backbones.resolve("bart-base")
    model = methods.get(name).apply(build_model(bb, device="meta"), bb, "classification")
    trainable, _ = count_params(model)
    head = 768 * 768 + 768 + 768 * 2 + 2
    assert trainable == adapters * ADAPTER + head  # meft1: no G adapter on the encoder's and the decoder's top layer


# -- settings as data (NOTE [ Method settings as data ]) ----------------------------------------


@pytest.mark.parametrize(
    "name, change, number",
    [
        ("lora", {"r": 4}, "r=4"),
        ("dora", {"alpha": 32}, "alpha=32"),
        ("adapter", {"reduction_factor": 8}, "hidden/8"),
        ("adapter-pfeiffer", {"reduction_factor": 4}, "hidden/4"),
        ("prefix", {"num_virtual_tokens": 10}, "10 learned"),
        ("top-k", {"divisor": 3}, "1/3"),
        ("lst", {"reduction_factor": 4}, "hidden/4"),
    ],
)
def test_each_description_is_generated_from_the_methods_settings(name, change, number):
    from dataclasses import replace

    method = methods.get(name)
    assert method.description == method.settings.description
    assert number in replace(method.settings, **change).description  # one number, changed in one place


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda: LoraSettings(r=0), "lora setting r=0 must be a whole number >= 1; pass e.g. r=8"),
        (lambda: LoraSettings(dropout=1.0), "lora setting dropout=1.0 must be a probability in [0, 1)"),
        (lambda: LoraSettings(alpha="16", use_dora=True), "dora setting alpha='16' must be a finite number > 0"),
        (lambda: AdapterSettings("Houlsby", reduction_factor=True), "adapter setting reduction_factor=True must be"),
        (lambda: PrefixSettings(num_virtual_tokens=-3), "prefix setting num_virtual_tokens=-3"),
        (lambda: TopKSettings(divisor=0), "top-k setting divisor=0"),
        (lambda: LadderSettings(gate_temperature=float("nan")), "lst setting gate_temperature=nan"),
    ],
)
def test_bad_settings_are_refused_in_one_line(make, needle):
    from memprof.errors import MemprofError

    with pytest.raises(MemprofError) as info:
        make()
    assert needle in str(info.value) and "; pass " in str(info.value) and "\n" not in str(info.value)
