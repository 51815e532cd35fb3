"""The gate as plain data: verdicts, tolerance and metric parsing, baselines, and the budget helpers."""

import json
import math

import pytest

from memprof.checks.budget import Excess, check_budget, format_excess, parse_budgets
from memprof.checks.gate import (
    DEFAULT_METRICS,
    GateRow,
    compare,
    format_change,
    key_label,
    make_baseline,
    parse_metrics,
    parse_tolerance,
    refresh_summary,
    summary,
)
from memprof.checks.gate_markdown import gate_markdown as markdown
from memprof.errors import MemprofError
from memprof.results.result import SCHEMA_VERSION, Memory, Result, ResultSet, layers_frame, load_results, write_json
from memprof.units import format_bytes, parse_bytes

MiB = 1024**2


def result(method="ft", seq_len=128, saved=100 * MiB, peak_act=None, peak=None, status="ok", torch="2.13.0", **kw):
    return Result(
        backbone="bert-base",
        method=method,
        engine="fake",
        target="cuda",
        dtype="fp32",
        attn_implementation="sdpa",
        seq_len=seq_len,
        batch_size=8,
        status=status,
        memory=Memory(saved_activations=saved, peak_activations=peak_act or 2 * saved, peak=peak or 5 * saved),
        environment={"torch": torch, "transformers": "4.57.0"},
        **kw,
    )


KEY = ("bert-base", "ft", 128, 8, "fp32", "fake", "cuda", "first", "full")


def test_identical_sets_pass_with_one_ok_row_per_metric():
    rs = ResultSet([result(), result("lora", saved=50 * MiB)])
    report = compare(rs, rs)
    assert report.passed and not report.improvements and not report.warnings
    assert [(r.key[1], r.metric, r.verdict) for r in report.rows] == [
        (m, metric, "ok") for m in ("ft", "lora") for metric in DEFAULT_METRICS
    ]


def test_growth_beyond_tolerance_is_a_regression_and_inside_is_ok():
    base = ResultSet([result(saved=100 * MiB, peak_act=200 * MiB, peak=500 * MiB)])
    cur = ResultSet([result(saved=105 * MiB, peak_act=201 * MiB, peak=500 * MiB)])
    report = compare(cur, base, tolerance=0.02)
    assert [(r.metric, r.baseline, r.current, r.verdict) for r in report.rows] == [
        ("saved_activations", 100 * MiB, 105 * MiB, "regression"),
        ("peak_activations", 200 * MiB, 201 * MiB, "ok"),  # +0.5%
        ("peak", 500 * MiB, 500 * MiB, "ok"),
    ]
    assert report.failures == [report.rows[0]]
    assert report.rows[0].change == pytest.approx(0.05)
    assert compare(cur, base, tolerance=0.05).passed  # exactly at the tolerance passes


def test_shrink_beyond_tolerance_is_an_improvement():
    report = compare(ResultSet([result(saved=90 * MiB)]), ResultSet([result(saved=100 * MiB)]))
    assert report.passed
    assert {r.verdict for r in report.improvements} == {"improvement"}
    assert format_change(report.rows[0]) == "-10.0 MiB (-10.0%)"


def test_growth_from_zero_is_a_regression_whatever_the_tolerance():
    base, cur = result(), result()
    base.memory.unattributed, cur.memory.unattributed = 0, 1024
    report = compare(ResultSet([cur]), ResultSet([base]), tolerance=0.5, metrics=("unattributed",))
    (row,) = report.rows
    assert (row.verdict, row.change, format_change(row)) == ("regression", math.inf, "+1.00 KiB (from 0)")


def test_cuda_only_metric_missing_is_unmeasured_not_failed():
    report = compare(ResultSet([result()]), ResultSet([result()]), metrics=("cuda_max_allocated",))
    assert [r.verdict for r in report.rows] == ["unmeasured"] and report.passed


@pytest.mark.parametrize(
    "base_status, cur_status, verdict, passed",
    [
        ("ok", "oom", "failed", False),
        ("ok", "error", "failed", False),
        ("oom", "ok", "fixed", True),
        ("oom", "oom", "still oom", True),
        ("error", "oom", "still oom", True),
    ],
)
def test_status_other_than_ok(base_status, cur_status, verdict, passed):
    report = compare(ResultSet([result(status=cur_status)]), ResultSet([result(status=base_status)]))
    assert [(r.metric, r.verdict, r.baseline_status, r.current_status) for r in report.rows] == [
        ("status", verdict, base_status, cur_status)
    ]
    assert report.passed is passed


def test_one_sided_configurations_are_listed_not_compared():
    base = ResultSet([result(), result("lora")])
    cur = ResultSet([result(), result("adapter")])
    report = compare(cur, base)
    assert report.only_baseline == [("bert-base", "lora", 128, 8, "fp32", "fake", "cuda", "first", "full")]
    assert report.only_current == [("bert-base", "adapter", 128, 8, "fp32", "fake", "cuda", "first", "full")]
    assert report.compared == 1 and report.passed


def test_version_and_setting_changes_are_warnings():
    cur = result(torch="2.13.0")
    cur.attn_implementation = "eager"
    report = compare(ResultSet([cur]), ResultSet([result(torch="2.4.0")]))
    assert report.warnings == [
        "torch 2.4.0 in the baseline, 2.13.0 now: a version change can move the numbers; refresh the baseline "
        "if the difference is expected",
        "bert-base ft seq=128 batch=8 fp32 fake->cuda: attn_implementation is 'sdpa' in the baseline and 'eager' now",
    ]


def test_frame_holds_exact_data():
    frame = compare(
        ResultSet([result(saved=110)]), ResultSet([result(saved=100)]), metrics=("saved_activations",)
    ).frame()
    assert frame.to_dict("records") == [
        {
            "backbone": "bert-base",
            "method": "ft",
            "seq_len": 128,
            "batch_size": 8,
            "dtype": "fp32",
            "engine": "fake",
            "target": "cuda",
            "step": "first",
            "loss": "full",
            "metric": "saved_activations",
            "baseline": 100,
            "current": 110,
            "delta": 10,
            "change": pytest.approx(0.1),
            "verdict": "regression",
            "baseline_status": "ok",
            "current_status": "ok",
        }
    ]


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: (ResultSet([result()]), ResultSet([])), "the baseline holds no results"),
        (lambda: (ResultSet([]), ResultSet([result()])), "current results file holds no results"),
        (lambda: (ResultSet([result("lora")]), ResultSet([result()])), "no configuration in common"),
        (lambda: (ResultSet([result(), result()]), ResultSet([result()])), "holds configuration"),
    ],
)
def test_unusable_sets_raise(build, message):
    cur, base = build()
    with pytest.raises(MemprofError, match=message):
        compare(cur, base)


@pytest.mark.parametrize(
    "text, value", [("2%", 0.02), ("0.5 %", 0.005), ("2", 0.02), ("0%", 0.0), ("50%", 0.5), (0.03, 0.03)]
)
def test_parse_tolerance(text, value):
    assert parse_tolerance(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["abc", "-1%", "150%", "51%", "", "2%%", "nan"])
def test_bad_tolerance_names_the_bounds(text):
    with pytest.raises(MemprofError, match=r"tolerance .* 0% to 50%"):
        parse_tolerance(text)


def test_parse_metrics():
    assert parse_metrics("peak, saved_activations,peak") == ("peak", "saved_activations")
    with pytest.raises(MemprofError, match="unknown metric 'peek'; use one or more of parameters"):
        parse_metrics("peek")
    with pytest.raises(MemprofError, match="no metric given"):
        parse_metrics(" , ")


def test_key_label():
    assert key_label(KEY) == "bert-base ft seq=128 batch=8 fp32 fake->cuda"
    assert (
        key_label(("opt-125m", "lora", 64, 2, "bf16", "cpu", "cpu", "first", "full"))
        == "opt-125m lora seq=64 batch=2 bf16 cpu"
    )
    assert key_label(("opt-125m", "lora", 64, 2, "bf16", "cpu", "cpu", "steady", "full")) == (
        "opt-125m lora seq=64 batch=2 bf16 cpu steady"
    )
    assert key_label(("opt-125m", "lora", 64, 2, "bf16", "cpu", "cpu", "steady", "chunked")) == (
        "opt-125m lora seq=64 batch=2 bf16 cpu steady chunked loss"
    )


def test_summary_and_markdown():
    base = ResultSet([result(saved=100 * MiB, peak_act=200 * MiB, peak=500 * MiB), result("lora")])
    cur = ResultSet([result(saved=105 * MiB, peak_act=200 * MiB, peak=500 * MiB)])
    report = compare(cur, base, metrics=("saved_activations",))
    assert summary(report) == (
        "FAIL: 1 configuration(s) x 1 metric(s) compared at 2.0% tolerance; 1 regressed, 0 improved, 1 only in the baseline"
    )
    row = "| `bert-base ft seq=128 batch=8 fp32 fake->cuda` | saved_activations | 100 MiB | 105 MiB | +5.00 MiB (+5.0%) | ❌ regression |"
    head = ["| configuration | metric | baseline | current | change | verdict |", "|---|---|---:|---:|---:|---|"]
    assert markdown(report).split("\n") == [
        "## memprof memory gate",
        "",
        f"**{summary(report)}**",
        "",
        "### Changes beyond the tolerance",
        "",
        *head,
        row,
        "",
        "### Only in the baseline",
        "",
        "- `bert-base lora seq=128 batch=8 fp32 fake->cuda`",
        "",
        "<details><summary>All comparisons</summary>",
        "",
        *head,
        row,
        "",
        "</details>",
        "",
    ]


def test_make_baseline_strips_layers_and_keeps_last_duplicate(tmp_path):
    first, last = result(saved=1), result(saved=2)
    last.layers = layers_frame([{"module": "bert.encoder", "saved_bytes": 2, "categories": {"other": 2}}])
    (tmp_path / "run").mkdir()
    write_json(
        ResultSet([first, result("lora"), last], command="memprof compare", options={"seq_len": [128]}),
        tmp_path / "run" / "results.json",
    )
    rs = make_baseline(tmp_path / "run")
    assert [(r.method, r.memory.saved_activations, len(r.layers)) for r in rs.results] == [
        ("lora", 100 * MiB, 0),
        ("ft", 2, 0),
    ]
    assert rs.command == "memprof compare" and rs.options == {"seq_len": [128], "baseline_layers": "stripped"}
    assert len(make_baseline(tmp_path / "run" / "results.json", keep_layers=True).results[1].layers) == 1
    write_json(rs, tmp_path / "b.json")
    assert load_results(tmp_path / "b.json").to_dict() == rs.to_dict()  # round-trips


def test_a_version_1_baseline_still_gates(tmp_path):
    # Version 2 added the category reversible_bits; a version 1 file (a baseline committed before)
    # is version 2 without it, so a new run is checked against it rather than refused.
    old = result(saved=100 * MiB)
    old.layers = layers_frame(
        [{"module": "bert.encoder", "saved_bytes": 100 * MiB, "categories": {"other": 100 * MiB}}]
    )
    data = ResultSet([old]).to_dict()
    assert data["schema_version"] == SCHEMA_VERSION == 4
    (tmp_path / "v1.json").write_text(
        json.dumps({**data, "schema_version": 1, "results": [{**data["results"][0], "schema_version": 1}]})
    )
    (read,) = load_results(tmp_path / "v1.json").results
    assert read.schema_version == 4 and read.layers["reversible_bits"].tolist() == [0] and read.step == "first"
    assert read.loss == "full"
    assert read.layers["other"].tolist() == [100 * MiB]
    assert compare(ResultSet([result(saved=100 * MiB)]), load_results(tmp_path / "v1.json")).passed
    for version in (0, 5):
        (tmp_path / f"v{version}.json").write_text(json.dumps({**data, "schema_version": version}))
        with pytest.raises(MemprofError, match=f"schema_version {version}, this memprof reads 1 or 2 or 3 or 4"):
            load_results(tmp_path / f"v{version}.json")


def test_make_baseline_from_a_single_result_and_bad_sources(tmp_path):
    write_json(result(), tmp_path / "one.json")
    assert [r.key for r in make_baseline(tmp_path / "one.json").results] == [KEY]
    with pytest.raises(MemprofError, match="holds no results.json"):
        make_baseline(tmp_path)
    with pytest.raises(MemprofError, match="does not exist"):
        make_baseline(tmp_path / "nope.json")


def test_refresh_summary_counts_changes():
    old = ResultSet([result(), result("lora"), result("adapter")])
    new = ResultSet([result(), result("lora", saved=1), result("ia3")])
    assert refresh_summary(new, old, "b.json") == (
        "wrote 3 configuration(s) to b.json; against the previous baseline: 1 added, 1 removed, 1 changed, 1 unchanged"
    )
    assert refresh_summary(new, None, "b.json") == "wrote 3 configuration(s) to b.json"


# --- budget.py: sizes and budgets ------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, n",
    [
        ("1.2 GiB", round(1.2 * 1024**3)),
        ("800MB", 800_000_000),
        ("800 mib", 800 * MiB),
        ("4096", 4096),
        ("1e3 KB", 1_000_000),
        (".5KiB", 512),
        ("0", 0),
        (2048, 2048),
        ("3 TB", 3 * 1000**4),
    ],
)
def test_parse_bytes(text, n):
    assert parse_bytes(text) == n


@pytest.mark.parametrize("text", ["", "abc", "1.2 GB/s", "-1 MiB", "1 G", "MiB", True, -5, None])
def test_parse_bytes_rejects(text):
    with pytest.raises(MemprofError, match="size"):
        parse_bytes(text)


@pytest.mark.parametrize(
    "n, text",
    [
        (None, "-"),
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.00 KiB"),
        (1536, "1.50 KiB"),
        (15 * MiB, "15.0 MiB"),
        (1023 * MiB, "1023 MiB"),
        (round(1.2 * 1024**3), "1.20 GiB"),
        (-2 * MiB, "-2.00 MiB"),
    ],
)
def test_format_bytes(n, text):
    assert format_bytes(n) == text


def test_budget_diff_names_metric_budget_measured_and_excess():
    limits = parse_budgets({"saved_activations": "1 MiB", "peak": "10 MiB"})
    memory = Memory(saved_activations=MiB + MiB // 4, peak=8 * MiB)
    over = check_budget(memory, limits)
    assert over == [Excess("saved_activations", MiB, MiB + MiB // 4)]
    assert format_excess(over, memory, limits).split("\n") == [
        "memory budget exceeded: saved_activations over budget",
        "  metric               budget  measured  excess",
        "  saved_activations  1.00 MiB  1.25 MiB  +256 KiB (+25.0%)  <-- over",
        "  peak               10.0 MiB  8.00 MiB  within",
    ]


def test_budget_errors():
    with pytest.raises(MemprofError, match="unknown budget 'peek'"):
        parse_budgets({"peek": "1 GiB"})
    with pytest.raises(MemprofError, match="no budget given"):
        parse_budgets({})
    with pytest.raises(MemprofError, match="no cuda_max_allocated"):
        check_budget(Memory(), {"cuda_max_allocated": 1})


def test_gate_row_without_measurement():
    row = GateRow(KEY, "status", None, None, "failed", "ok", "oom")
    assert (row.delta, row.change, format_change(row)) == (None, None, "-")


def test_the_committed_baseline_gates_every_method_on_every_gated_backbone():
    # .ci/gate.sh profiles every registered method (aliases once) on its backbones; a method the
    # baseline lacks would be "only in the current results", compared to nothing, never gated
    import re
    from pathlib import Path

    from memprof import methods

    root = Path(__file__).resolve().parents[2]
    gated = re.search(r"^BACKBONES=\(([^)]*)\)", (root / ".ci" / "gate.sh").read_text(), re.M).group(1).split()
    baseline = load_results(root / "reports" / "baseline" / "baseline.json")
    have = {(r.backbone, r.method) for r in baseline.results if r.status == "ok"}
    wanted = {(b, m) for b in gated for m in methods.names() if methods.get(m).alias_of is None}
    assert wanted - have == set(), "refresh the baseline: REFRESH=1 bash .ci/gate.sh"
    assert {m for _, m in have} - {m for _, m in wanted} == set(), "the baseline holds a method no longer profiled"
