"""A formula for a deep model composed from shallow copies (NOTE [ Composing depth ]): the growth of
timelines and tables by hand, and composed formulas held to real profiles at depths, batch sizes and
sequence lengths no trace saw, for every method on six backbones."""

from __future__ import annotations

from dataclasses import replace

import pytest

from memprof import methods
from memprof.engines import ModelCache, run, symbolic
from memprof.engines.composition import START, NotComposable, compose, depth_of, shallow_copy
from memprof.engines.config import ProfileConfig
from memprof.engines.formula_fit import disagreement_with
from memprof.errors import MemprofError
from memprof.results.depth import Token, grow_count, grow_rows, grow_timeline, replay
from memprof.results.polynomial import Poly

B, S = Poly.var("b"), Poly.var("s")
PARAM, GRAD, ACT, TMP = 0, 1, 3, 4


def alloc(kind: int, n) -> Token:
    return Token(True, kind, n if isinstance(n, Poly) else Poly.const(n))


def free(kind: int, n) -> Token:
    return Token(False, kind, n if isinstance(n, Poly) else Poly.const(n))


def layer(i: int) -> list[Token]:
    """A layer's forward: one activation kept for backward, one temporary freed at once."""
    return [alloc(ACT, 10 * B * S), alloc(TMP, 4 * B * S), free(TMP, 4 * B * S)]


def step(depth: int) -> list[Token]:
    """Parameters per layer, then an adapter's per layer (two runs side by side), a gate vector
    of one element per layer (its size counts the layers), the forward, the backward."""
    params = [alloc(PARAM, 100)] * depth + [alloc(PARAM, 7)] * depth + [alloc(PARAM, 2 * depth)]
    forward = [t for i in range(depth) for t in layer(i)]
    backward = [t for _ in range(depth) for t in (alloc(GRAD, 100), free(ACT, 10 * B * S))]
    return [alloc(ACT, 3 * B * S), *params, *forward, *backward]


def test_a_timeline_grows_by_repeating_each_inserted_layer_where_it_was_inserted():
    grown = grow_timeline([step(3), step(4), step(5)], 9)
    assert grown == step(12)  # the two runs of parameters stay apart; the gate vector counts 12 layers


def test_the_grown_timeline_replays_to_the_step_of_that_depth():
    parts = replay(grow_timeline([step(3), step(4), step(5)], 9))
    # 12 layers: parameters 12·100 + 12·7 + 24 = 1,308 bytes. The peak is the last layer's temporary
    # in the forward (the batch's 3·b·s, 12 kept activations of 10·b·s, 4·b·s) or the first gradient
    # of the backward (its 100 bytes before the top layer's activation goes), whichever is larger
    assert parts["sums"]["parameters"] == Poly.const(1308)
    for b, s in ((2, 8), (4, 8), (3, 100)):
        bs = b * s
        assert max(c["peak"](b, s) for c in parts["peaks"]) == 1308 + max(127 * bs, 123 * bs + 100)
        assert max(p(b, s) for p in parts["peak_activations"]) == 123 * bs


def test_a_third_depth_that_does_not_follow_is_refused():
    wrong = step(5)[:-2]  # two layers deeper, one layer's backward short
    with pytest.raises(NotComposable):
        grow_timeline([step(3), step(4), wrong], 9)
    changed = [alloc(ACT, 3 * B * S), alloc(PARAM, 6)]  # a size that does not grow by the same step
    with pytest.raises(NotComposable):
        grow_timeline([[alloc(ACT, 3 * B * S), alloc(PARAM, 2)], [alloc(ACT, 3 * B * S), alloc(PARAM, 3)], changed], 5)


def test_layer_rows_are_renumbered_and_a_row_counting_the_layers_grows():
    def table(depth: int):
        rows = [("embeddings", {"embedding": 2 * B * S})]
        rows += [(f"encoder.layer.{i}.attention", {"attention_scores": 12 * B * S * S}) for i in range(depth - 1)]
        rows += [(f"encoder.layer.{depth - 1}.output", {"linear_input": 5 * B * S})]  # the top layer differs
        rows += [(f"encoder.layer (reversible stack, {depth} layers)", {"reversible_bits": depth * B * S})]
        return rows

    assert grow_rows([table(3), table(4), table(5)], 9) == table(12)


def test_counts_grow_by_the_same_step():
    assert grow_count(10, 13, 9) == 37


# -- composed formulas against real profiles ---------------------------------------------------

BACKBONES = ("bert-base", "bart-base", "opt-125m", "llama-3.2-1b", "gpt2", "qwen2.5-0.5b")
METHODS = [m for m in methods.names() if not methods.get(m).alias_of]
DEPTHS = (6, 8)  # the copies traced have 3, 4 and 5 layers
#: the first two each formula covers are compared (prefix tuning's holds where s is a multiple of 8)
SIZES = ((2, 37), (5, 90), (3, 61), (4, 200), (2, 250), (3, 64))


def _traced_once():
    """A trace function for ``compose`` that traces each depth once, and the traces it made."""
    traces: dict = {}

    def trace(config: ProfileConfig):
        depth = depth_of(config.resolved)
        if depth not in traces:
            traces[depth] = symbolic._trace(config)
        return traces[depth]

    return trace, traces


def _everyday(p) -> bool:
    # every day: sizes that count the layers inside inserted layers (LST's gates); MEFT's reversible
    # stacks and BART's two stacks every day through derive (below)
    return (p["backbone"], p["method"]) == ("gpt2", "lst")


@pytest.mark.matrix(keep=_everyday)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("backbone", BACKBONES)
def test_a_composed_formula_is_the_profile_at_depths_and_sizes_no_trace_saw(backbone, method):
    config = ProfileConfig(backbone, method=method, engine="fake")
    trace, traced = _traced_once()
    if (backbone, method) == ("llama-3.2-1b", "bitfit"):  # no biases to train: refused, traced or profiled
        with pytest.raises(MemprofError, match="bitfit trains bias terms"):
            compose(shallow_copy(config, DEPTHS[0]), trace)
        return
    if not methods.get(method).layers_alike:
        with pytest.raises(NotComposable, match="does not say its layers are alike"):
            compose(shallow_copy(config, DEPTHS[0]), trace)
        return
    cache, compared = ModelCache(), 0  # one cache: it must know the copies of 6 and 8 layers apart
    for depth in DEPTHS:
        deep = shallow_copy(config, depth)
        formula = compose(deep, trace)
        assert f"of {START}, {START + 1} and {START + 2} of its {depth} layers" in formula.note
        sizes = [(b, s) for b, s in SIZES if formula.covers(b, s)][:2]
        assert sizes, formula.valid
        for b, s in sizes:
            measured = run(replace(deep, batch_size=b, seq_len=s), cache)
            assert measured.status == "ok"
            assert disagreement_with(formula, measured) == "", (depth, b, s)
            assert (formula.trainable_params, formula.total_params) == (
                measured.trainable_params,
                measured.total_params,
            )
            compared += 1
    assert compared == 2 * len(DEPTHS)
    assert sorted(traced) == [START, START + 1, START + 2]  # the same three shallow traces for both depths


def test_a_model_whose_stacks_differ_in_depth_is_not_composed():
    config = ProfileConfig("bart-base", method="lora", engine="fake")
    uneven = replace(config, resolved=replace(config.resolved, config={**config.resolved.config, "decoder_layers": 4}))
    assert depth_of(uneven.resolved) is None
    with pytest.raises(NotComposable, match="differ in depth"):
        compose(uneven, _traced_once()[0])


# -- behind derive ------------------------------------------------------------------------------


def test_derive_composes_a_model_from_min_depth_on_and_the_result_is_the_profile(monkeypatch):
    import memprof.engines.composition as composition

    monkeypatch.setattr(composition, "MIN_DEPTH", 6)  # bart-base's 6 layers count as deep here
    config = ProfileConfig("bart-base", method="meft1", engine="fake")
    formula = symbolic.derive(config)
    assert formula.how == "symbolic" and formula.note == "composed from symbolic traces of 3, 4 and 5 of its 6 layers"
    measured = run(replace(config, batch_size=3, seq_len=77))
    assert disagreement_with(formula, measured) == ""
    monkeypatch.setattr(composition, "MIN_DEPTH", 7)  # one layer short of it: derive traces it whole
    assert symbolic._composed(config) is None


def test_derive_traces_whole_what_does_not_compose(monkeypatch):
    import memprof.engines.composition as composition

    monkeypatch.setattr(composition, "MIN_DEPTH", 6)
    whole = object()
    monkeypatch.setattr(symbolic, "trace", lambda config: whole)  # what derive returns where it traces whole
    top_k = ProfileConfig("bart-base", method="top-k", engine="fake")  # the depth decides which layers train
    bart = ProfileConfig("bart-base", method="lora", engine="fake")
    uneven = replace(bart, resolved=replace(bart.resolved, config={**bart.resolved.config, "encoder_layers": 8}))
    qwen = ProfileConfig("qwen2.5-0.5b", method="lora", engine="fake")
    sliding = {**qwen.resolved.config, "use_sliding_window": True, "max_window_layers": 12, "sliding_window": 64}
    sliding.pop("layer_types", None)  # transformers derives them: full attention below 12, sliding above
    mixed = replace(qwen, resolved=replace(qwen.resolved, config=sliding))
    for config, says in (
        (top_k, "does not say its layers are alike"),
        (uneven, "stacks differ in depth"),
        (mixed, "layers are of 2 types"),
    ):
        with pytest.raises(NotComposable, match=says):
            compose(config, _traced_once()[0])
        assert symbolic.derive(config) is whole


def test_a_method_is_composed_only_where_it_says_its_layers_are_alike():
    assert methods.Method("x", "a third-party method", lambda model, backbone, task: model).layers_alike is False
    assert [m for m in METHODS if not methods.get(m).layers_alike] == ["top-k"]


def step_with_gates(depth: int) -> list[Token]:
    """Each layer's backward reads a gate vector of one element per layer (Ladder side tuning's)."""
    gates = Poly.const(2 * depth)
    backward = [t for _ in range(depth) for t in (alloc(TMP, gates), alloc(GRAD, 100), free(TMP, gates))]
    return [alloc(ACT, 3 * B * S), *[alloc(PARAM, 100)] * depth, *backward]


def test_an_inserted_layer_whose_events_count_the_layers_takes_their_size_at_the_depth():
    assert grow_timeline([step_with_gates(3), step_with_gates(4), step_with_gates(5)], 9) == step_with_gates(12)


def test_a_stretch_too_long_to_read_is_refused_not_overflowed():
    def changing(depth: int) -> list[Token]:
        return [alloc(PARAM, 1000 * i + depth) for i in range(1_200)]  # every event's size counts the layers

    with pytest.raises(NotComposable, match="too long to read"):
        grow_timeline([changing(3), changing(4), changing(5)], 9)


def test_a_per_layer_list_whose_entries_differ_is_not_cut_to_a_copy():
    qwen = ProfileConfig("qwen2.5-0.5b", method="lora", engine="fake")
    layers = qwen.resolved.config["num_hidden_layers"]
    types = ["full_attention"] * (layers - 1) + ["sliding_attention"]
    mixed = replace(qwen, resolved=replace(qwen.resolved, config={**qwen.resolved.config, "layer_types": types}))
    with pytest.raises(NotComposable, match="layers differ"):
        shallow_copy(mixed, 3)
    alike = shallow_copy(qwen, 3)  # a list of one type is cut to the copy's depth
    assert alike.resolved.config.get("layer_types", ["full_attention"] * 3)[:4] == ["full_attention"] * 3
