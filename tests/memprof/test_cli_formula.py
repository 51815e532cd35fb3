"""``memprof formula`` and ``memprof compare --fast``: the closed form on the command line."""

import json

import pytest

from memprof.engines import ModelCache, run
from memprof.engines.config import ProfileConfig
from memprof.results.formula import Formula
from memprof.results.result import load_results

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


def test_compare_fast_gives_the_profiles_results_and_reports_the_formulas(cli, tmp_path, stub_plots):
    code, out, err = cli(
        "compare",
        *SMALL,
        "--methods",
        "ft,lora",
        "--seq-lens",
        "16,40",
        "--batch-sizes",
        "2,3",
        "--out",
        "fast",
        "--fast",
        "-q",
    )
    assert code == 0, err
    rs = load_results(tmp_path / "fast" / "results.json")
    assert len(rs.results) == 8
    cache = ModelCache()
    checked = 0
    for r in rs.results:
        measured = run(
            ProfileConfig(
                backbone="all-minilm-l6-v2", method=r.method, engine="fake", seq_len=r.seq_len, batch_size=r.batch_size
            ),
            cache,
        )
        assert r.memory == measured.memory and r.layers.equals(measured.layers)
        assert r.trainable_params == measured.trainable_params and r.attn_implementation == measured.attn_implementation
        checked += "closed_form" not in r.environment  # the one real check profile per method
        assert r.environment.get("closed_form", "symbolic") == "symbolic"
    assert checked == 2
    assert sorted(p.name for p in (tmp_path / "fast" / "formulas").iterdir()) == ["ft.json", "lora.json"]
    page = (tmp_path / "fast" / "report.html").read_text()
    assert "<h2>Closed form</h2>" in page and "one symbolic trace" in page


def test_compare_fast_fails_loudly_when_the_check_profile_disagrees(cli, monkeypatch, stub_plots):
    from memprof.results import formula as formula_module

    real = formula_module.Formula.memory_at

    def off_by_one(self, b, s):
        m = real(self, b, s)
        m.peak += 1
        return m

    monkeypatch.setattr(formula_module.Formula, "memory_at", off_by_one)
    code, out, err = cli(
        "compare", *SMALL, "--methods", "ft", "--seq-lens", "16", "--batch-sizes", "1,2", "--out", "bad", "--fast", "-q"
    )
    assert code == 1
    assert "the closed form of ft disagrees with its check profile: peak: formula" in err
    assert all(r.status == "error" for r in load_results("bad/results.json").results)


def test_compare_fast_needs_the_fake_engine(cli):
    code, out, err = cli("compare", *SMALL, "--engine", "cpu", "--fast")
    assert code == 2 and "--fast evaluates the fake engine's closed form, not engine 'cpu'" in err
