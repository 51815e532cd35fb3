"""Plots: each plot function returns exactly the data it drew, and writes a real PNG."""

import pandas as pd
import pytest
from PIL import Image
from synthetic_results import TOTAL_PARAMS, golden_resultset, make_result

from memprof.reporters import plots
from memprof.results.module_names import layer_group
from memprof.results.result import CATEGORIES, ResultSet


def peak_act(method, seq, batch):
    f = {"ft": 8, "lora": 6, "adapter": 5}[method]
    k = seq * batch
    return 8 * k + 2 * f * k * 2560 + 4096 * batch + 2048 * k


def check_png(path, min_size=(400, 200)):
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert img.format == "PNG"
        assert img.mode in ("RGB", "RGBA")
        assert img.width >= min_size[0] and img.height >= min_size[1]
        assert img.width <= 4000 and img.height <= 4000
        rgb = img.convert("RGB")
        assert len(rgb.getcolors(maxcolors=1 << 20)) > 20  # axes, text and lines, not a flat fill


@pytest.fixture
def rs():
    return golden_resultset()


def test_activations_vs_seq_len(rs, tmp_path):
    data = plots.plot_activations_vs_seq_len(rs, tmp_path / "a.png")
    # lora failed at (128, 2) and adapter ran out of memory at (256, 4): those points are missing.
    assert data == {
        2: {
            "ft": [(128, peak_act("ft", 128, 2)), (256, peak_act("ft", 256, 2))],
            "lora": [(256, peak_act("lora", 256, 2))],
            "adapter": [(128, peak_act("adapter", 128, 2)), (256, peak_act("adapter", 256, 2))],
        },
        4: {
            "ft": [(128, peak_act("ft", 128, 4)), (256, peak_act("ft", 256, 4))],
            "lora": [(128, peak_act("lora", 128, 4)), (256, peak_act("lora", 256, 4))],
            "adapter": [(128, peak_act("adapter", 128, 4))],
        },
    }
    assert data == plots.activations_vs_seq_len_data(rs)
    check_png(tmp_path / "a.png")


def test_activations_vs_batch_size(rs, tmp_path):
    data = plots.plot_activations_vs_batch_size(rs, tmp_path / "b.png")
    assert sorted(data) == [128, 256]
    assert data[128]["ft"] == [(2, peak_act("ft", 128, 2)), (4, peak_act("ft", 128, 4))]
    assert data[128]["lora"] == [(4, peak_act("lora", 128, 4))]
    assert data[256]["adapter"] == [(2, peak_act("adapter", 256, 2))]
    check_png(tmp_path / "b.png")


@pytest.mark.parametrize(
    "module, group",
    [
        ("model.encoder.layers.3.fc1", "encoder.layers.3"),
        ("base_model.model.model.decoder.layers.11.self_attn.q_proj.lora_A.default", "decoder.layers.11"),
        ("model.shared", "shared"),
        ("classification_head.out_proj", "classification_head.out_proj"),
        ("model.encoder.embed_positions", "encoder.embed_positions"),
        ("bert.encoder.layer.0.attention.self.query", "bert.encoder.layer.0"),
        ("model.encoder.layers (reversible stack, 6 layers)", "encoder.layers (reversible stack, 6 layers)"),
        ("", "(model)"),
    ],
)
def test_layer_group(module, group):
    assert layer_group(module) == group


def test_layers_largest(rs, tmp_path):
    data = plots.plot_layers_largest(rs, tmp_path / "c.png")
    assert (data["seq_len"], data["batch_size"]) == (256, 4)
    assert list(data["methods"]) == ["ft", "lora"]  # adapter ran out of memory there
    k = 256 * 4
    expected = pd.DataFrame(
        0,
        index=pd.Index(["shared", "encoder.layers.0", "encoder.layers.1", "classification_head.dense"], name="group"),
        columns=list(CATEGORIES),
        dtype="int64",
    )
    expected.loc["shared", "embedding"] = 8 * k
    for i in (0, 1):
        expected.loc[f"encoder.layers.{i}", "linear_input"] = 2 * 6 * k * 1024
        expected.loc[f"encoder.layers.{i}", "activation_fn"] = 6 * k * 512
    expected.loc["classification_head.dense", "linear_input"] = 4096 * 4
    pd.testing.assert_frame_equal(data["methods"]["lora"], expected)
    check_png(tmp_path / "c.png")


def test_peak_breakdown(rs, tmp_path):
    data = plots.plot_peak_breakdown(rs, tmp_path / "d.png")
    k = 1024
    assert data["methods"]["lora"] == {
        "parameters": 4 * TOTAL_PARAMS,
        "gradients": 4 * 2_000_000,
        "optimizer_state": 8 * 2_000_000,
        "activations": peak_act("lora", 256, 4),
        "temporaries": 256 * k,
        "peak": 4 * TOTAL_PARAMS + 12 * 2_000_000 + peak_act("lora", 256, 4) + 256 * k,
    }
    assert list(data["methods"]) == ["ft", "lora"]
    for parts in data["methods"].values():  # the parts at the moment of the peak add up to it
        assert sum(v for k, v in parts.items() if k != "peak") == parts["peak"]
    check_png(tmp_path / "d.png")


def test_saved_by_category(rs, tmp_path):
    data = plots.plot_saved_by_category(rs, tmp_path / "e.png")
    k = 1024
    assert data["methods"]["ft"] == {
        **{c: 0 for c in CATEGORIES},
        "embedding": 8 * k,
        "linear_input": 4 * 8 * k * 1024 + 4096 * 4,
        "activation_fn": 2 * 8 * k * 512,
    }
    for method, cats in data["methods"].items():
        r = next(r for r in rs.results if r.key[1:4] == (method, 256, 4))
        assert sum(cats.values()) == r.memory.saved_activations
    check_png(tmp_path / "e.png")


def test_nothing_finished_still_draws_every_plot(tmp_path):
    failed = make_result("ft", 128, 2)
    failed.status, failed.message = "error", "RuntimeError: x"
    rs = ResultSet(results=[failed])
    paths = plots.render(rs, tmp_path)
    assert sorted(paths) == sorted(plots.PLOTS)
    assert plots.activations_vs_seq_len_data(rs) == {}
    assert plots.peak_breakdown_data(rs)["methods"] == {}
    for path in paths.values():
        check_png(path, min_size=(300, 100))


def test_units_switch_to_gib(tmp_path):
    from memprof.units import GIB, unit_for

    assert unit_for(GIB - 1) == ("MiB", 1024**2) and unit_for(GIB) == ("GiB", GIB)
    big = ResultSet(results=[make_result("ft", 512, 64), make_result("lora", 512, 64)])
    data = plots.plot_activations_vs_seq_len(big, tmp_path / "big.png")
    assert max(b for lines in data.values() for pts in lines.values() for _, b in pts) >= GIB
    check_png(tmp_path / "big.png")
