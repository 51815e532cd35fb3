"""``memprof formula`` and ``memprof compare``'s closed form on the command line."""

import json

import pytest

from memprof.engines import ModelCache, run
from memprof.engines.config import ProfileConfig
from memprof.results.formula import Formula
from memprof.results.result import load_results
from tests.memprof.conftest import TINY_BERT

SMALL = ("--backbone", "all-minilm-l6-v2")


def test_formula_prints_and_writes_the_polynomials(cli, tmp_path):
    code, out, err = cli("formula", *SMALL, "--method", "lora", "--at", "3,100", "--json", "f.json")
    assert code == 0, err
    formula = Formula.from_dict(json.loads((tmp_path / "f.json").read_text()))
    assert formula.how == "symbolic" and formula.method == "lora"
    measured = run(ProfileConfig(backbone="all-minilm-l6-v2", method="lora", engine="fake", batch_size=3, seq_len=100))
    assert formula.memory_at(3, 100) == measured.memory
    assert f"saved {measured.memory.saved_activations:,}" in out
    assert str(formula.sums["saved_activations"]).split(" + ")[0] in out.replace("\n", " ")
    assert "encoder.layer.1-5 (each)" in out


@pytest.mark.parametrize("at", ["8", "8,x", "0,128", "8,128;"])
def test_formula_refuses_a_bad_at_in_one_line(cli, at):
    code, out, err = cli("formula", *SMALL, "--at", at)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "--at" in err and "pass e.g. --at 8,512" in err


def test_formula_of_a_backbone_shorter_than_the_default_length_and_at_beyond_its_positions(cli, tiny_opt):
    # tiny-opt has 32 positions, fewer than profile's default sequence length (512)
    code, out, err = cli("formula", "--backbone", tiny_opt, "--method", "lora", "--at", "3,32")
    assert code == 0, err
    measured = run(ProfileConfig(backbone=tiny_opt, method="lora", engine="fake", batch_size=3, seq_len=32))
    assert f"saved {measured.memory.saved_activations:,}" in out and "s <= 32" in out
    code, out, err = cli("formula", "--backbone", tiny_opt, "--at", "2,16;2,64")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert err.strip().endswith(
        "sequence length 64 is beyond tiny-opt's 32 positions; pass a sequence length of at most 32, e.g. --at 2,32"
    )


def test_formula_of_a_short_backbone_that_cannot_be_traced_is_refused_in_one_line(cli, tmp_path):
    # BERT expands its 32-position token-type buffer to the batch: a symbolic length cannot be traced,
    # and a fit profiles up to 192 positions; so neither gives a formula
    folder = tmp_path / "tiny-bert"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(TINY_BERT))
    code, out, err = cli("formula", "--backbone", str(folder), "--json", str(tmp_path / "f.json"))
    assert (code, out) == (2, "") and len(err.strip().splitlines()) == 1
    assert err.startswith("error: no formula for tiny-bert ft: the trace cannot stay symbolic (the step failed on ")
    assert err.strip().endswith(
        "and a fit profiles sequence lengths up to 192, beyond its 32 positions; profile its sizes instead "
        "(memprof profile, or memprof compare --profile-all)"
    )
    assert not (tmp_path / "f.json").exists()


GRID = ("--methods", "ft,lora", "--seq-lens", "16,40", "--batch-sizes", "2,3")


_PROFILES: dict = {}  # the real profiles every test here compares with, each made once


def _same_as_profiles(rs) -> int:
    """Every result equals a real profile of its configuration; how many were profiled."""
    cache = ModelCache()
    profiled = 0
    for r in rs.results:
        key = (r.method, r.seq_len, r.batch_size)
        if key not in _PROFILES:
            config = ProfileConfig(
                backbone="all-minilm-l6-v2", method=r.method, engine="fake", seq_len=r.seq_len, batch_size=r.batch_size
            )
            _PROFILES[key] = run(config, cache)
        measured = _PROFILES[key]
        assert r.memory == measured.memory and r.layers.equals(measured.layers)
        assert r.trainable_params == measured.trainable_params and r.attn_implementation == measured.attn_implementation
        profiled += "closed_form" not in r.environment
        assert r.environment.get("closed_form", "symbolic") == "symbolic"
    return profiled


@pytest.fixture
def trace_small_grids(monkeypatch):
    """Trace a method of 4 configurations (compare profiles a grid that small: TRACE_COST)."""
    from memprof.sweep import closed_form

    monkeypatch.setattr(closed_form, "TRACE_COST", 2)


def test_compare_evaluates_checked_formulas_then_answers_from_the_cache(
    closed_form, trace_small_grids, tmp_path, stub_plots
):
    code, out, err = closed_form("compare", *SMALL, *GRID, "--out", "cold")
    assert code == 0, err
    rs = load_results(tmp_path / "cold" / "results.json")
    assert len(rs.results) == 8 and _same_as_profiles(rs) == 2  # the one real check profile per method
    assert "6 of 8 results evaluated from checked closed forms, 2 profiled" in out
    assert sorted(p.name for p in (tmp_path / "cold" / "formulas").iterdir()) == ["ft.json", "lora.json"]
    page = (tmp_path / "cold" / "report.html").read_text()
    assert "<h2>Closed form</h2>" in page and "one symbolic trace" in page
    assert "6 of 8 results were evaluated from these formulas and 2 profiled: " in page
    assert len(list((tmp_path / "formula-cache").glob("*.json"))) == 2

    code, out, err = closed_form("compare", *SMALL, *GRID, "--out", "warm", "--no-report")
    assert code == 0, err
    warm = load_results(tmp_path / "warm" / "results.json")
    assert _same_as_profiles(warm) == 0  # nothing traced or profiled: the cache answered
    assert "8 of 8 results evaluated from checked closed forms, 0 profiled" in out
    assert {p.name for p in (tmp_path / "warm").iterdir()} == {"results.json", "formulas"}
    # rendered later, the report still shows the formulas the compare wrote beside its results
    assert closed_form("report", "warm/results.json", "--quiet")[0] == 0
    page = (tmp_path / "warm" / "report.html").read_text()
    assert (
        "<h2>Closed form</h2>" in page and "8 of 8 results were evaluated from these formulas and 0 profiled: " in page
    )


def test_profile_all_and_no_cache(closed_form, trace_small_grids, tmp_path, stub_plots):
    code, out, err = closed_form("compare", *SMALL, *GRID, "--out", "all", "--profile-all", "-q")
    assert code == 0, err
    assert _same_as_profiles(load_results(tmp_path / "all" / "results.json")) == 8
    assert not (tmp_path / "all" / "formulas").exists()
    code, out, err = closed_form(
        "compare", *SMALL, *GRID[2:], "--methods", "ft", "--out", "nocache", "--no-cache", "-q"
    )
    assert code == 0, err
    assert _same_as_profiles(load_results(tmp_path / "nocache" / "results.json")) == 1
    assert not (tmp_path / "formula-cache").exists()


def test_a_formula_that_disagrees_with_its_check_profile_falls_back_to_profiling(
    closed_form, trace_small_grids, monkeypatch, tmp_path, stub_plots
):
    from memprof.results import formula as formula_module

    real = formula_module.Formula.memory_at

    def off_by_one(self, b, s):
        m = real(self, b, s)
        m.peak += 1
        return m

    monkeypatch.setattr(formula_module.Formula, "memory_at", off_by_one)
    code, out, err = closed_form(
        "compare", *SMALL, "--methods", "ft", "--seq-lens", "16", "--batch-sizes", "2,3", "--out", "bad"
    )
    assert code == 0, err
    assert "warning: ft: profiled: its closed form disagrees with its check profile: peak: formula" in err
    monkeypatch.setattr(formula_module.Formula, "memory_at", real)
    rs = load_results(tmp_path / "bad" / "results.json")
    assert _same_as_profiles(rs) == 2 and all("closed_form_fallback" in r.environment for r in rs.results)
    page = (tmp_path / "bad" / "report.html").read_text()
    assert "<b>ft</b>: every configuration profiled: its closed form disagrees with its check profile" in page
    assert not list((tmp_path / "formula-cache").glob("*.json"))


@pytest.mark.parametrize(
    "backbone, options",
    [
        ("all-minilm-l6-v2", ("--engine", "cpu")),
        ("tiny-opt", ("--task", "causal-lm", "--loss", "chunked")),
    ],
)
def test_the_cpu_engine_and_the_chunked_loss_profile_every_configuration(
    closed_form, trace_small_grids, tiny_opt, tmp_path, stub_plots, backbone, options
):
    backbone = tiny_opt if backbone == "tiny-opt" else backbone
    grid = ("--methods", "ft", "--seq-lens", "8,16", "--batch-sizes", "2")
    code, out, err = closed_form("compare", "--backbone", backbone, *grid, *options, "--out", "c")
    assert code == 0, err
    assert "evaluated from checked closed forms" not in out
    rs = load_results(tmp_path / "c" / "results.json").results
    assert len(rs) == 2 and all(r.status == "ok" and "closed_form" not in r.environment for r in rs)


def test_a_method_that_cannot_be_derived_is_profiled_and_said_so(
    closed_form, trace_small_grids, monkeypatch, tmp_path, stub_plots
):
    from memprof.engines import symbolic

    def broken(config, profile=None):
        raise NotImplementedError("no meta kernel for aten::something\nsecond line")

    monkeypatch.setattr(symbolic, "derive", broken)
    code, out, err = closed_form("compare", *SMALL, *GRID, "--out", "broken")
    assert code == 0, err
    rs = load_results(tmp_path / "broken" / "results.json")
    assert _same_as_profiles(rs) == 8
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert warnings == [
        f"warning: {method}: profiled: it has no closed form (NotImplementedError: no meta kernel for "
        "aten::something second line); its results are exact all the same"
        for method in ("ft", "lora")
    ]


def test_a_grid_too_small_to_pay_for_a_trace_is_profiled_unless_its_formula_is_cached(
    closed_form, tmp_path, stub_plots
):
    small = ("--methods", "ft", "--seq-lens", "16,40", "--batch-sizes", "2")  # 2 < TRACE_COST configurations
    code, out, err = closed_form("compare", *SMALL, *small, "--out", "small")
    assert code == 0, err
    assert _same_as_profiles(load_results(tmp_path / "small" / "results.json")) == 2
    assert "0 of 2 results evaluated from checked closed forms, 2 profiled" in out
    assert not list((tmp_path / "formula-cache").glob("*.json"))
    code, out, err = closed_form("compare", *SMALL, "--methods", "ft", "--seq-lens", "16,40", "--batch-sizes", "2,3,4")
    assert code == 0, err  # 6 configurations: traced, checked, cached
    code, out, err = closed_form("compare", *SMALL, *small, "--out", "again")
    assert _same_as_profiles(load_results(tmp_path / "again" / "results.json")) == 0


@pytest.mark.long  # real worker processes, each tracing: the everyday run covers the runner in-process
def test_worker_processes_evaluate_checked_formulas_too(closed_form, tmp_path, stub_plots):
    grid = ("--methods", "ft,lora", "--seq-lens", "16,40", "--batch-sizes", "2,3,4")  # 6 >= TRACE_COST each
    code, out, err = closed_form("compare", *SMALL, *grid, "--jobs", "2", "--out", "workers")
    assert code == 0, err
    rs = load_results(tmp_path / "workers" / "results.json")
    assert len(rs.results) == 12 and _same_as_profiles(rs) == 2
    assert len(list((tmp_path / "formula-cache").glob("*.json"))) == 2  # stored by the workers


def test_a_fitted_formula_is_checked_again_beyond_the_size_its_check_profiled():
    from memprof.sweep.closed_form import _needs_check

    config = ProfileConfig(backbone="all-minilm-l6-v2", method="ft", engine="fake", seq_len=64, batch_size=8)
    formula = Formula.from_dict(json.loads(json.dumps(_tiny_formula_dict())))
    grid = [config, ProfileConfig(backbone="all-minilm-l6-v2", method="ft", engine="fake", seq_len=128, batch_size=8)]
    for how, checked_at, needs in [
        ("symbolic", (2, 16), False),  # a trace holds wherever its bounds say
        ("fitted", (2, 16), True),  # solved from small sizes: the grid goes beyond its check
        ("fitted", (8, 128), False),
        ("fitted", (64, 64), True),  # as many tokens, but longer sequences than it was checked at
    ]:
        formula.how = how
        assert _needs_check(formula, checked_at, grid) is needs, (how, checked_at)


def _tiny_formula_dict() -> dict:
    from memprof.results.polynomial import Poly

    b, s = Poly.var("b"), Poly.var("s")
    return Formula(
        backbone="all-minilm-l6-v2",
        method="ft",
        task="classification",
        dtype="fp32",
        target="cuda",
        attn_implementation="sdpa",
        how="fitted",
        trainable_params=1,
        total_params=1,
        sums={"parameters": Poly.const(4), "saved_activations": b * s, "unattributed": Poly()},
        peaks=[
            {
                "peak": b * s + 4,
                "gradients": Poly(),
                "optimizer_state": Poly(),
                "temporaries": Poly(),
                "activations_at_peak": b * s,
            }
        ],
        peak_activations=[b * s],
        layers=[],
    ).to_dict()


def test_formula_at_a_size_where_a_condition_fails_says_which_and_to_profile(cli, tmp_path):
    # prefix tuning's 20 virtual tokens: the modelled CUDA attention pads its bias only where s + 20 is
    # no multiple of 8 (NOTE [ Conditions a formula holds under ])
    from memprof.models import backbones

    small = dict(hidden_size=64, num_attention_heads=4, num_hidden_layers=2, ffn_dim=192, vocab_size=1000)
    config = {**backbones.resolve("opt-125m").config, **small, "word_embed_proj_dim": 64}
    (tmp_path / "small-opt").mkdir()
    (tmp_path / "small-opt" / "config.json").write_text(json.dumps(config))
    args = ("formula", "--backbone", str(tmp_path / "small-opt"), "--method", "prefix", "--dtype", "mixed-bf16")
    code, out, err = cli(*args, "--at", "2,300;2,256")
    assert code == 0, err
    lines = {line.split(":")[0]: line for line in out.replace("\n ", " ").splitlines() if line.startswith("at b=")}
    assert lines["at b=2, s=300"].endswith("(where Mod(s + 20, 8) != 0 is not true: profile it to be sure)")
    assert lines["at b=2, s=256"].endswith(" bytes")
