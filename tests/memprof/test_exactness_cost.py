"""The section "What exactness costs" (memprof/reporters/exactness.py): exact MEFT beside its float
twin, from hand-made results with known numbers, in summary.md and report.html; then once end to end
through ``memprof compare`` on a tiny OPT with the fake engine."""

import json
import math

import pytest
from synthetic_results import golden_resultset, make_result

from memprof.reporters import exactness, html, markdown, table
from memprof.results.result import Memory, Result, ResultSet, layers_frame
from memprof.units import MIB, format_bytes

HEADER = (
    "| method | float twin | seq len | batch | peak (MiB) | float twin peak (MiB) | peak ratio (exact / float) "
    "| reversible bits (MiB) | temporaries at peak, exact − float (MiB) |"
)


def result(method, seq_len, batch_size, *, peak=0, temporaries=0, bits=(), status="ok"):
    """A result with the given peak and temporaries (bytes) and one layer per entry of ``bits``
    (its ``reversible_bits`` bytes), beside an attention layer that keeps none."""
    records = [
        {"module": "model.decoder.layers.0.self_attn", "saved_bytes": 4 * MIB, "categories": {"linear_input": 4 * MIB}}
    ]
    records += [
        {"module": f"model.decoder.layers.{i}", "saved_bytes": b, "categories": {"reversible_bits": b}}
        for i, b in enumerate(bits)
    ]
    ok = status == "ok"
    return Result(
        backbone="opt-125m",
        method=method,
        engine="fake",
        target="cuda",
        dtype="fp32",
        attn_implementation="sdpa",
        seq_len=seq_len,
        batch_size=batch_size,
        task="causal-lm",
        status=status,
        message="" if ok else "OutOfMemoryError: CUDA out of memory",
        memory=Memory(peak=peak, temporaries=temporaries) if ok else Memory(),
        layers=layers_frame(records if ok else []),
    )


def hand_made(*extra):
    """ft, meft1 and meft1-float at (128, 4) and (256, 4), meft3 and meft3-float at (128, 4).

    meft1 (128, 4): peak 900 MiB against 800: ratio 9/8 = 1.125; bits 2 layers x 3 MiB = 6 MiB;
    temporaries 40 - 32 = +8 MiB. meft1 (256, 4): 1000 MiB against 960: 25/24 = 1.0417; bits 2 x 6 MiB;
    temporaries 64 - 64 = 0. meft3 (128, 4): 999 MiB against 888: 9/8 = 1.125; bits 3 x 2.5 MiB = 7.5
    MiB; temporaries 16 - 20 = -4 MiB.
    """
    return ResultSet(
        results=[
            make_result("ft", 128, 4, backbone="opt-125m"),
            result("meft1", 128, 4, peak=900 * MIB, temporaries=40 * MIB, bits=(3 * MIB, 3 * MIB)),
            result("meft1-float", 128, 4, peak=800 * MIB, temporaries=32 * MIB),
            result("meft3", 128, 4, peak=999 * MIB, temporaries=16 * MIB, bits=(5 * MIB // 2,) * 3),
            result("meft3-float", 128, 4, peak=888 * MIB, temporaries=20 * MIB),
            result("meft1", 256, 4, peak=1000 * MIB, temporaries=64 * MIB, bits=(6 * MIB, 6 * MIB)),
            result("meft1-float", 256, 4, peak=960 * MIB, temporaries=64 * MIB),
            *extra,
        ],
        options={"methods": ["ft", "meft1", "meft3", "meft1-float", "meft3-float"]},
    )


ROWS = [
    "| meft1 | meft1-float | 128 | 4 | 900.0 | 800.0 | 1.125 | 6.0 | +8.0 |",
    "| meft3 | meft3-float | 128 | 4 | 999.0 | 888.0 | 1.125 | 7.5 | -4.0 |",
    "| meft1 | meft1-float | 256 | 4 | 1,000.0 | 960.0 | 1.042 | 12.0 | 0.0 |",
]


def section(text):
    """The lines of summary.md from the section's title up to what follows it (a title, the command),
    without the blank lines at its end."""
    lines = text.splitlines()
    start = lines.index("### What exactness costs")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith(("#", "Reproduce"))), len(lines))
    while not lines[end - 1]:
        end -= 1
    return lines[start:end]


def test_frame_holds_the_exact_bytes():
    frame = exactness.exactness_frame(exactness.exactness_pairs(hand_made(), table.method_order(hand_made())))
    assert frame[["method", "float_method", "seq_len", "batch_size"]].values.tolist() == [
        ["meft1", "meft1-float", 128, 4],
        ["meft3", "meft3-float", 128, 4],
        ["meft1", "meft1-float", 256, 4],
    ]
    assert frame["peak"].tolist() == [900 * MIB, 999 * MIB, 1000 * MIB]
    assert frame["float_peak"].tolist() == [800 * MIB, 888 * MIB, 960 * MIB]
    assert frame["peak_ratio"].tolist() == pytest.approx([9 / 8, 9 / 8, 25 / 24])
    assert frame["reversible_bits"].tolist() == [6 * MIB, 15 * MIB // 2, 12 * MIB]
    assert frame["temporaries_difference"].tolist() == [8 * MIB, -4 * MIB, 0]


def test_summary_md_rows_by_hand():
    lines = section(markdown.to_markdown(table.summary_data(hand_made())))
    assert lines[2] == markdown.md_text(exactness.INTRO)
    assert lines[4:] == [HEADER, "|---|---|---:|---:|---:|---:|---:|---:|---:|", *ROWS]


def test_a_peak_of_a_gib_or_more_shows_both_peaks_in_gib():
    rs = ResultSet(
        results=[
            result("meft2", 512, 8, peak=3 * 1024 * MIB, temporaries=MIB, bits=(MIB,)),
            result("meft2-float", 512, 8, peak=2 * 1024 * MIB),
        ]
    )
    headers, rows = table.summary_data(rs)["exactness"]["table"]
    assert headers[4:6] == ["peak (GiB)", "float twin peak (GiB)"]
    assert rows == [["meft2", "meft2-float", "512", "8", "3.00", "2.00", "1.500", "1.0", "+1.0"]]


def test_the_alias_meft_pairs_with_meft1_float():
    rs = ResultSet(
        results=[
            result("meft", 128, 4, peak=900 * MIB, temporaries=40 * MIB, bits=(3 * MIB, 3 * MIB)),
            result("meft1-float", 128, 4, peak=800 * MIB, temporaries=32 * MIB),
            result("meft2-float", 128, 4, peak=700 * MIB),
        ]
    )
    headers, rows = table.summary_data(rs)["exactness"]["table"]
    assert rows == [["meft", "meft1-float", "128", "4", "900.0", "800.0", "1.125", "6.0", "+8.0"]]


def test_aliases_are_the_registrys():
    """exactness.ALIASES repeats the registry's aliases of methods with a float twin (the registry
    sits above the reporters: NOTE [Exact and float twins])."""
    from memprof import methods

    registered = methods.names()
    stands_for = {m: methods.get(m).alias_of for m in registered}
    assert exactness.ALIASES == {m: a for m, a in stands_for.items() if a and f"{a}-float" in registered}
    twins = {m: exactness.float_twin(m) for m in registered}
    assert {m: t for m, t in twins.items() if t in registered} == {
        "meft1": "meft1-float",
        "meft2": "meft2-float",
        "meft3": "meft3-float",
        "meft": "meft1-float",
    }


@pytest.mark.parametrize(
    "results",
    [
        golden_resultset().results,  # ft, lora, adapter
        [result("meft1", 128, 4, peak=MIB), result("meft2-float", 128, 4, peak=MIB)],  # not twins
        [result("meft1", 128, 4, peak=MIB), result("meft1-float", 256, 4, peak=MIB)],  # not one configuration
        [result("meft1-float", 128, 4, peak=MIB), result("meft2-float", 128, 4, peak=MIB)],  # no exact method
    ],
)
def test_no_pair_no_section(results):
    rs = ResultSet(results=results)
    data = table.summary_data(rs)
    assert data["exactness"] is None
    assert "exactness" not in markdown.to_markdown(data)
    assert "exactness" not in html.to_html(html.report_data(rs, {}))


def test_a_pair_that_did_not_finish_is_left_out_and_named():
    rs = hand_made(result("meft3", 256, 4, peak=MIB, bits=(MIB,)), result("meft3-float", 256, 4, status="oom"))
    lines = section(markdown.to_markdown(table.summary_data(rs)))
    assert lines[4:] == [
        HEADER,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        *ROWS,
        "",
        "Left out, a result not ok: meft3 at sequence length 256, batch size 4 (meft3-float: oom).",
    ]
    # every pair finished: no footnote
    assert "Left out" not in markdown.to_markdown(table.summary_data(hand_made()))


def test_report_html_shows_the_same_table():
    rs = hand_made(result("meft2", 64, 1, status="oom"), result("meft2-float", 64, 1, peak=MIB))
    page = html.to_html(html.report_data(rs, {}))
    assert "<h2>What exactness costs</h2>" in page
    assert "Left out, a result not ok: meft2 at sequence length 64, batch size 1 (meft2: oom)." in page
    headers, rows = table.summary_data(rs)["exactness"]["table"]
    assert html._table(headers, rows) in page
    assert [r[4:] for r in rows] == [row.strip("| ").split(" | ")[4:] for row in ROWS]
    # the section sits after every configuration's table, before the environment
    assert (
        page.index("<h2>Every configuration</h2>")
        < page.index("<h2>What exactness costs</h2>")
        < page.index("<h2>Environment</h2>")
    )


def test_compare_end_to_end_on_a_tiny_opt(tiny_opt, tmp_path, stub_plots):
    """meft1 and meft1-float on the fake engine: the section's ratio is peak(meft1) / peak(meft1-float)
    as results.json records them, and the bits are meft1's reversible_bits there."""
    from memprof.cli.compare import compare_cmd

    out = tmp_path / "run"
    compare_cmd(
        backbone=tiny_opt, methods="meft1,meft1-float", seq_lens="16", batch_sizes="2", jobs=1, out=out, quiet=True
    )
    saved = {r["method"]: r for r in json.loads((out / "results.json").read_text())["results"]}
    exact, float_ = saved["meft1"], saved["meft1-float"]
    assert exact["status"] == float_["status"] == "ok"
    bits = sum(layer["categories"].get("reversible_bits", 0) for layer in exact["layers"])
    assert bits > 0  # exact arithmetic keeps bits; the float twin keeps none
    assert not any(layer["categories"].get("reversible_bits") for layer in float_["layers"])
    ratio = exact["memory"]["peak"] / float_["memory"]["peak"]
    assert not math.isclose(ratio, 1.0)
    mib = ("MiB", MIB)
    temporaries = exact["memory"]["temporaries"] - float_["memory"]["temporaries"]
    row = (
        f"| meft1 | meft1-float | 16 | 2 | {format_bytes(exact['memory']['peak'], mib)} | "
        f"{format_bytes(float_['memory']['peak'], mib)} | {ratio:.3f} | {format_bytes(bits, mib)} | "
        f"{'+' if temporaries > 0 else ''}{format_bytes(temporaries, mib)} |"
    )
    rule = "|---|---|---:|---:|---:|---:|---:|---:|---:|"
    assert section((out / "summary.md").read_text())[4:] == [HEADER, rule, row]
    assert f"<td>{ratio:.3f}</td>" in (out / "report.html").read_text()
