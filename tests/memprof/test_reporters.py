"""Table and Markdown reporters: exact data from fixed synthetic results, and a golden summary.md.

Set MEMPROF_UPDATE_GOLDEN=1 to rewrite tests/golden/summary.md after an intended change.
"""

import math
import os
from pathlib import Path

import pandas as pd
import pytest
from synthetic_results import GOLDEN_COMMAND, golden_resultset, make_result

from memprof.reporters import markdown, render_all, table
from memprof.results.result import CATEGORIES, ResultSet

GOLDEN = Path(__file__).parents[1] / "golden"


def peak_activations(method, seq, batch):
    """By hand, from the layout in synthetic_results: 8k + 2*f*k*2560 + 4096*batch + 2048k."""
    f = {"ft": 8, "lora": 6, "adapter": 5}[method]
    k = seq * batch
    return 8 * k + 2 * f * k * 2560 + 4096 * batch + 2048 * k


@pytest.fixture
def rs():
    return golden_resultset()


def test_results_frame_is_one_flat_row_per_result(rs):
    frame = table.results_frame(rs)
    assert len(frame) == len(rs.results) == 12
    for row, r in zip(frame.to_dict("records"), rs.results):
        assert (row["method"], row["seq_len"], row["batch_size"], row["status"]) == (
            r.method,
            r.seq_len,
            r.batch_size,
            r.status,
        )
        for col in (
            "parameters",
            "gradients",
            "optimizer_state",
            "saved_activations",
            "peak_activations",
            "temporaries",
            "peak",
        ):
            assert row[col] == getattr(r.memory, col)
        assert pd.isna(row["cuda_max_allocated"])


def test_summary_numbers_equal_the_results(rs):
    frame = table.summary_frame(rs)
    by_key = {(r.method, r.seq_len, r.batch_size): r for r in rs.results}
    assert len(frame) == 12
    for row in frame.to_dict("records"):
        r = by_key[(row["method"], row["seq_len"], row["batch_size"])]
        assert row["status"] == r.status
        if r.status == "ok":
            assert row["trainable_params"] == r.trainable_params
            assert row["saved_activations"] == r.memory.saved_activations
            assert (
                row["peak_activations"]
                == r.memory.peak_activations
                == peak_activations(r.method, r.seq_len, r.batch_size)
            )
            assert row["peak"] == r.memory.peak
        else:
            assert pd.isna(row["peak_activations"]) and math.isnan(row["peak_activations_reduction_pct"])
            assert row["message"] == r.message


def test_summary_rows_are_grouped_by_configuration_in_sweep_method_order(rs):
    frame = table.summary_frame(rs)
    keys = list(zip(frame.seq_len, frame.batch_size, frame.method))
    assert keys[:6] == [
        (128, 2, "ft"),
        (128, 2, "lora"),
        (128, 2, "adapter"),
        (128, 4, "ft"),
        (128, 4, "lora"),
        (128, 4, "adapter"),
    ]


def test_reduction_against_ft_by_hand(rs):
    frame = table.summary_frame(rs).set_index(["method", "seq_len", "batch_size"])
    # lora at (128, 4): k = 512; ft peak activations 8k + 40960k + 16384 + 2048k = 22,040,576; lora 16,797,696.
    assert frame.loc[("ft", 128, 4), "peak_activations"] == 22_040_576
    assert frame.loc[("lora", 128, 4), "peak_activations"] == 16_797_696
    assert frame.loc[("lora", 128, 4), "peak_activations_reduction_pct"] == pytest.approx(100 * 5_242_880 / 22_040_576)
    # peak: parameters 1.6e9 + grads + Adam state (12 bytes per trainable) + activations + 256k temporaries.
    ft_peak = 1_600_000_000 + 12 * 400_000_000 + 22_040_576 + 256 * 512
    lora_peak = 1_600_000_000 + 12 * 2_000_000 + 16_797_696 + 256 * 512
    assert frame.loc[("lora", 128, 4), "peak"] == lora_peak
    assert frame.loc[("lora", 128, 4), "peak_reduction_pct"] == pytest.approx(100 * (ft_peak - lora_peak) / ft_peak)
    assert frame.loc[("ft", 256, 4), "peak_activations_reduction_pct"] == 0.0
    # no ft to compare with: NaN, not 0
    assert math.isnan(frame.loc[("adapter", 256, 4), "peak_reduction_pct"])


def test_reduction_is_nan_without_ft():
    rs = ResultSet(results=[make_result("lora", 128, 2), make_result("adapter", 128, 2)])
    frame = table.summary_frame(rs)
    assert frame["peak_activations_reduction_pct"].isna().all()
    assert table.reduction_pct(75, 100) == 25.0 and table.reduction_pct(150, 100) == -50.0
    assert math.isnan(table.reduction_pct(1, 0))


def test_largest_config_prefers_more_tokens_then_longer_sequences(rs):
    assert table.largest_config(rs) == (256, 4)
    tie = ResultSet(results=[make_result("ft", 128, 4), make_result("ft", 256, 2)])
    assert table.largest_config(tie) == (256, 2)
    assert table.largest_config(ResultSet()) is None
    head = table.headline_frame(rs)
    assert list(head.method) == ["ft", "lora", "adapter"]
    assert list(head.status) == ["ok", "ok", "oom"]


def test_layers_table_has_every_module_of_every_configuration(rs):
    frame = table.layers_table(rs)
    ok = [r for r in rs.results if r.status == "ok"]
    assert len(frame) == 6 * len(ok)
    lora = frame[(frame.method == "lora") & (frame.seq_len == 256) & (frame.batch_size == 4)]
    assert lora.saved_bytes.sum() == next(r for r in ok if r.key[1:4] == ("lora", 256, 4)).memory.saved_activations
    assert (frame[list(CATEGORIES)].sum(axis=1) == frame.saved_bytes).all()


def test_csv_files_round_trip(rs, tmp_path):
    paths = table.render(rs, tmp_path)
    back = pd.read_csv(paths["results.csv"], keep_default_na=False)
    assert back["peak_activations"].tolist() == [r.memory.peak_activations for r in rs.results]
    assert back["status"].tolist() == [r.status for r in rs.results]
    layers = pd.read_csv(paths["layers.csv"])
    assert layers["saved_bytes"].sum() == sum(r.layers.saved_bytes.sum() for r in rs.results)


def test_formatting_picks_one_unit_per_column(rs):
    headers, rows = table.summary_cells(table.headline_frame(rs), per_config=False)
    assert headers == [
        "method",
        "status",
        "trainable params",
        "saved activations (MiB)",
        "peak activations (MiB)",
        "peak (GiB)",
        "peak activations reduction vs ft (%)",
        "peak reduction vs ft (%)",
    ]
    assert rows[0] == ["ft", "ok", "400.00 M", "40.0", "42.0", "6.00", "0.0", "0.0"]
    assert rows[2] == ["adapter", "oom: OutOfMemoryError: CUDA out of memory", "—", "—", "—", "—", "—", "—"]


def test_markdown_data(rs):
    data = table.summary_data(rs)
    assert data["counts"] == {"total": 12, "ok": 10, "error": 1, "oom": 1}
    assert data["largest"] == (256, 4)
    assert data["command"] == GOLDEN_COMMAND
    assert data["about"]["engine"] == "fake" and data["about"]["attention"] == "sdpa"
    headers, rows = data["table"]
    assert len(rows) == 12 and headers[:4] == ["method", "seq len", "batch", "status"]


def test_markdown_matches_golden(rs, tmp_path):
    text = markdown.render(rs, tmp_path / "summary.md").read_text()
    golden = GOLDEN / "summary.md"
    if os.environ.get("MEMPROF_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()


def test_render_all_writes_every_file(rs, tmp_path):
    paths = render_all(rs, tmp_path / "new")
    assert sorted(paths) == sorted(
        [
            "results.csv",
            "layers.csv",
            "activations_vs_seq_len.png",
            "activations_vs_batch_size.png",
            "layers_largest.png",
            "peak_breakdown.png",
            "saved_by_category.png",
            "timeline.png",
            "report.html",
            "summary.md",
        ]
    )
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths.values())


def test_options_without_a_method_list_keep_the_order_of_appearance():
    """Found by tests/memprof/test_fuzz.py: ``options.methods`` null (or not a list) crashed every view."""
    rs = golden_resultset()
    for methods in (None, "ft,lora", 3, {"a": 1}):
        rs.options["methods"] = methods
        assert table.method_order(rs) == ["ft", "lora", "adapter"]
