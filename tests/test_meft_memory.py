"""MEFT's activation memory, measured with the profiler's fake engine (eager attention, target
cpu), against the MEFT issue's goals: bert-base width, seq 512, batch 8, fp32. ``meft1``..``meft3``
run meft's exact arithmetic (int64 streams, dropped bits kept per layer), ``*-float`` the paper's."""

import json

import pytest

from memprof.backbones import builtin
from memprof.config import ProfileConfig
from memprof.engines import ModelCache, run
from memprof.result import Result

SEQ, BATCH, HIDDEN = 512, 8, 768
ELEMENTS = BATCH * SEQ * HIDDEN  # of one stream
I64, F32 = 8, 4


@pytest.fixture(scope="module")
def profile(tmp_path_factory):
    folder = tmp_path_factory.mktemp("configs")
    cache = ModelCache()
    results: dict[tuple[int, str], Result] = {}

    def measure(layers: int, method: str) -> Result:
        if (layers, method) not in results:
            path = folder / f"bert-base-{layers}.json"
            path.write_text(json.dumps({**builtin()["bert-base"], "num_hidden_layers": layers}))
            cfg = ProfileConfig(str(path), method=method, seq_len=SEQ, batch_size=BATCH, attn="eager", target="cpu")
            results[layers, method] = run(cfg, cache)
            assert results[layers, method].status == "ok"
        return results[layers, method]

    return measure


@pytest.fixture(scope="module")
def peak(profile):
    return lambda layers, method: profile(layers, method).memory.peak_activations


def test_meft1_is_at_most_12_percent_of_ft(peak):
    assert peak(12, "meft1") <= 0.12 * peak(12, "ft")


def test_exact_meft1_costs_at_most_a_quarter_more_than_float_at_24_layers(peak):
    assert peak(24, "meft1") <= 1.25 * peak(24, "meft1-float")


@pytest.mark.parametrize("layers", [12, 24])
@pytest.mark.parametrize("method", ["meft1", "meft1-float"])
def test_meft1_below_lora_with_checkpointing(peak, method, layers):
    assert peak(layers, method) < peak(layers, "lora+ckpt")


@pytest.mark.parametrize("method, kept_per_element", [
    ("meft1", 1), ("meft2", 1), ("meft3", 2),  # one byte per element of each scaled stream
    ("meft1-float", 0), ("meft2-float", 0), ("meft3-float", 0),
])
def test_kept_bits_per_layer(profile, method, kept_per_element):
    # Under the classification head meft1 and meft2 keep the top layer's graph (meft's cache_top_layer):
    # the layers below it are reversible; meft3 recomputes half a layer at a time and keeps none.
    for layers in (6, 24):
        reversible = layers if method.startswith("meft3") else layers - 1
        assert profile(layers, method).layers["reversible_bits"].sum() == reversible * kept_per_element * ELEMENTS


def test_meft1_grows_by_its_kept_bits_only(peak):
    # Exact: B*T*H bytes per layer (lam = 13/128 drops 7 bits of x1, kept in one byte) and one int64
    # checksum per stream per layer; float: nothing.
    assert peak(24, "meft1") - peak(6, "meft1") == 18 * (ELEMENTS + 2 * 8)
    assert peak(24, "meft1-float") == peak(6, "meft1-float")


@pytest.mark.parametrize("method, stream", [("meft1", I64), ("meft1-float", F32)])
def test_meft1_floor_is_two_streams_kept_bits_and_one_layer(profile, peak, method, stream):
    # Two top streams of (8, 512, 768), int64 in exact arithmetic and fp32 in float, the kept bits,
    # plus one layer's recomputation: the 24-layer figure is no more than that, where the layer's
    # share is bounded by what one ft layer saves.
    floor = 2 * ELEMENTS * stream + int(profile(24, method).layers["reversible_bits"].sum())
    ft_layer = (peak(12, "ft") - peak(6, "ft")) // 6
    assert floor < peak(24, method) <= floor + ft_layer
