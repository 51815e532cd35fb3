"""Module names as results write them: MEFT's reversible stacks named for what they are, and the
layer row each module path belongs to (memprof.results.module_names NOTE [ Reversible stacks ])."""

import pytest

from memprof import methods
from memprof.instrument.modules import module_paths
from memprof.models import backbones
from memprof.models.tasks import build_model
from memprof.results.module_names import layer_row, reversible_stack_name, stack_member_name

STACK = "bert.encoder.layer (reversible stack, 12 layers)"


def test_reversible_stack_name():
    assert reversible_stack_name("bert.encoder.layer", 12, 12) == STACK
    assert (
        reversible_stack_name("model.decoder.layers", 6, 2)
        == "model.decoder.layers (reversible stack, 2 of 6 layers reversible)"
    )


@pytest.mark.parametrize(
    "rest, name",
    [
        ("base_layers", f"{STACK}.base_layers"),  # not the container's name: that is the one-element list's
        ("base_layers.11", "bert.encoder.layer.11"),
        ("base_layers.11.attention.self", "bert.encoder.layer.11.attention.self"),
        ("adapters.11", "bert.encoder.layer.11.adapters"),
        ("adapters.11.ffn.down", "bert.encoder.layer.11.adapters.ffn.down"),
        ("adapters", f"{STACK}.adapters"),
    ],
)
def test_stack_member_name(rest, name):
    assert stack_member_name(rest, "bert.encoder.layer", STACK) == name


@pytest.mark.parametrize(
    "module, row",
    [
        ("bert.encoder.layer.3.attention.self", "bert.encoder.layer.3"),
        ("bert.embeddings.word_embeddings", "bert.embeddings"),
        ("classifier", "classifier"),
        ("", ""),
        (STACK, STACK),
        # a stack's submodules (layers above num_rev_layers run as plain layers) stay in the stack's row
        (f"{STACK}.base_layers.11.attention.self", STACK),
        (f"{STACK}.adapters.11.ffn.down", STACK),
        (
            "model.decoder.layers (reversible stack, 2 of 6 layers reversible).base_layers.5",
            "model.decoder.layers (reversible stack, 2 of 6 layers reversible)",
        ),
        # a parenthesis elsewhere is not a stack
        ("odd (name).child.grandchild", "odd (name).child"),
    ],
)
def test_layer_row(module, row):
    assert layer_row(module) == row


def tiny(name, layers=2):
    bb = backbones.resolve(name)
    shrink = {
        "bert": dict(hidden_size=16, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=32),
        "opt": dict(
            hidden_size=16, num_hidden_layers=layers, num_attention_heads=2, ffn_dim=32, word_embed_proj_dim=16
        ),
        "bart": dict(
            d_model=16,
            encoder_layers=layers,
            decoder_layers=layers,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=32,
            decoder_ffn_dim=32,
        ),
    }[bb.family]
    config = {**bb.config, **shrink, "vocab_size": 64}
    return backbones.Backbone(name=f"tiny-{bb.family}", family=bb.family, config=config)


def converted(name, method, layers=2):
    bb = tiny(name, layers)
    return methods.get(method).apply(build_model(bb, device="meta"), bb, bb.default_task)


def test_module_paths_name_the_stack_and_give_its_layers_their_own_paths():
    model = converted("opt-125m", "meft1", layers=3)  # causal-lm: every layer reversible
    paths = module_paths(model)
    by_name = {name: paths[id(m)] for name, m in model.named_modules()}
    stack = "model.decoder.layers (reversible stack, 3 layers)"
    assert by_name["model.decoder.layers.0"] == stack
    assert by_name["model.decoder.layers.0.base_layers"] == f"{stack}.base_layers"
    assert by_name["model.decoder.layers.0.base_layers.2.self_attn"] == "model.decoder.layers.2.self_attn"
    assert by_name["model.decoder.layers.0.adapters.1.g"] == "model.decoder.layers.1.adapters.g"
    assert by_name["model.decoder.layers"] == "model.decoder.layers"  # the one-element list keeps its path
    assert by_name["model.decoder.embed_tokens"] == "model.decoder.embed_tokens"
    assert len(set(paths.values())) == len(paths)


def test_module_paths_name_each_stack_with_its_reversible_layers():
    # A stack whose top layer keeps its graph (meft's cache_top_layer=True) names how many layers
    # run through the reversible Function; by default every one does.
    model = converted("bart-base", "meft1-float")
    paths = module_paths(model)
    assert paths[id(model.model.encoder.layers[0])] == "model.encoder.layers (reversible stack, 2 layers)"
    assert paths[id(model.model.decoder.layers[0])] == "model.decoder.layers (reversible stack, 2 layers)"
    model.model.decoder.layers[0].cache_top = True
    paths = module_paths(model)
    decoder = "model.decoder.layers (reversible stack, 1 of 2 layers reversible)"
    assert paths[id(model.model.decoder.layers[0])] == decoder
    assert {"model.decoder.layers.1.fc1", "model.decoder.layers.1.adapters.ffn"} <= set(paths.values())


def test_module_paths_leave_other_models_alone():
    bb = tiny("bert-base")
    model = build_model(bb, device="meta")
    paths = module_paths(model)
    assert all(paths[id(m)] == name for name, m in model.named_modules())
