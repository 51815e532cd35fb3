"""The step over time: the compact timeline a Result stores (memprof.results.timeline), and its plot in
the report of ``memprof compare`` (memprof.reporters.timeline)."""

import json
import sys

import pytest

from memprof.errors import MemprofError
from memprof.models import backbones
from memprof.results.result import Result, load_results
from memprof.results.timeline import KINDS, Timeline, downsample

P, G, O, A, T = range(5)  # noqa: E741 - kind indices, in KINDS order

#: A small BART whose MEFT step peaks in backward (as the default bart-large grid does): four
#: reversible layers, sequence 128 x batch 4 against a 64-wide model.
TINY_BART = {
    **backbones.builtin()["bart-base"],
    "d_model": 64,
    "encoder_layers": 4,
    "decoder_layers": 4,
    "encoder_attention_heads": 4,
    "decoder_attention_heads": 4,
    "encoder_ffn_dim": 128,
    "decoder_ffn_dim": 128,
    "max_position_embeddings": 256,
    "vocab_size": 128,
}


def replayed(nbytes, events, kinds):
    """Live bytes per kind after each event, brute force: states[i] after the first i events."""
    live, states = [0] * len(KINDS), [[0] * len(KINDS)]
    for ev in events:
        key, sign = (ev, 1) if ev >= 0 else (~ev, -1)
        live[kinds[key]] += sign * nbytes[key]
        states.append(list(live))
    return states


def test_every_state_kept_when_few():
    # parameters 100; forward: activation 40, temporary 30 freed; backward: gradient 100, activation freed
    nbytes, kinds = [100, 40, 30, 100], [P, A, T, G]
    events = [0, 1, 2, ~2, 3, ~1]
    tl = downsample(nbytes, events, kinds, {"forward": 1, "backward": 4, "end": 6})
    assert tl.event == [0, 1, 2, 3, 4, 5, 6] and tl.events == 6
    assert tl.live == {
        "parameters": [0, 100, 100, 100, 100, 100, 100],
        "gradients": [0, 0, 0, 0, 0, 100, 100],
        "optimizer_state": [0] * 7,
        "activations": [0, 0, 40, 40, 40, 40, 0],
        "temporaries": [0, 0, 0, 30, 0, 0, 0],
    }
    # 100 + 40 + 100 = 240 after the gradient arrives, more than 170 with the temporary: a backward peak
    assert (tl.peak_point, tl.peak, tl.peak_phase) == (5, 240, "backward")
    assert tl.phase_at(3) == "forward" and tl.phase_at(0) == ""


def test_a_long_step_keeps_its_peak_dips_and_phase_starts_exactly():
    # 6,000 allocate/free pairs of growing size, one 10,000-byte spike in the middle, a dip at 4,000
    nbytes, kinds, events = [], [], []
    for i in range(6000):
        nbytes.append(10_000 if i == 3001 else i % 97 + 1)
        kinds.append((A, T, G)[i % 3])
        events += [i] if i % 2 else [i, ~i]
    marks = {"forward": 0, "backward": 5000, "optimizer": 8000, "end": len(events)}
    tl = downsample(nbytes, events, kinds, marks, max_points=60)
    states = replayed(nbytes, events, kinds)
    totals = [sum(s) for s in states]
    assert len(tl.event) <= 60 + 2 + len(marks)
    assert {0, len(events), 5000, 8000} <= set(tl.event)
    assert all([tl.live[k][i] for k in KINDS] == states[e] for i, e in enumerate(tl.event))  # exact states
    assert tl.peak == max(totals) and tl.event[tl.peak_point] == totals.index(max(totals))
    runs = [range(r * len(totals) // 30, (r + 1) * len(totals) // 30) for r in range(30)]
    for run in runs:  # each run's highest and lowest state survive
        assert {max(run, key=totals.__getitem__), min(run, key=totals.__getitem__)} <= set(tl.event)


def test_results_keep_the_timeline_and_older_files_read_without_one(tmp_path):
    tl = downsample([8, 4], [0, 1, ~1], [P, A], {"forward": 1, "backward": 2, "end": 3})
    result = Result(
        backbone="b",
        method="ft",
        engine="fake",
        target="cuda",
        dtype="fp32",
        attn_implementation="sdpa",
        seq_len=8,
        batch_size=1,
        timeline=tl,
    )
    data = json.loads(json.dumps(result.to_dict()))
    assert data["timeline"]["live"]["activations"] == [0, 0, 4, 0] and data["timeline"]["peak_point"] == 2
    assert Result.from_dict(data).timeline == tl
    del data["timeline"]
    data["schema_version"] = 2
    assert Result.from_dict(data).timeline is None
    data["timeline"] = None
    assert Result.from_dict(data).timeline is None


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda t: t.update(event=[0, 2, 1, 3]), "timeline.event must hold increasing event counts"),
        (
            lambda t: t["live"].update(gradients=[0, 0]),
            "timeline.live.gradients holds 2 numbers, must hold one per point (4, as timeline.event)",
        ),
        (lambda t: t["live"].update(activations=[0, -1, 4, 0]), "timeline.live.activations[1] is -1"),
        (lambda t: t.update(peak_point=4), "timeline.peak_point must index one of them"),
        (lambda t: t["phases"].update(warmup=0), "timeline.phases.warmup is not a field memprof writes"),
        (lambda t: t["phases"].update(end=4), "timeline.phases.end is 4, must be at most timeline.events (3)"),
    ],
)
def test_a_bad_timeline_is_refused(change, message):
    tl = downsample([8, 4], [0, 1, ~1], [P, A], {"forward": 1, "backward": 2, "end": 3})
    data = Result(
        backbone="b",
        method="ft",
        engine="fake",
        target="cuda",
        dtype="fp32",
        attn_implementation="sdpa",
        seq_len=8,
        batch_size=1,
        timeline=tl,
    ).to_dict()
    change(data["timeline"])
    with pytest.raises(MemprofError, match="result \\(b ft seq=8 batch=1 fp32 fake->cuda\\): ") as refused:
        Result.from_dict(data)
    assert message in str(refused.value)


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """``memprof compare`` with its default methods (ft, lora, meft) and engine (fake) on TINY_BART."""
    from memprof.cli import main

    root = tmp_path_factory.mktemp("timeline")
    (root / "tiny-bart").mkdir()
    (root / "tiny-bart" / "config.json").write_text(json.dumps(TINY_BART))
    argv = sys.argv
    sys.argv = [
        "memprof",
        "compare",
        "--backbone",
        str(root / "tiny-bart"),
        "--seq-lens",
        "128",
        "--batch-sizes",
        "4",
        "--jobs",
        "1",
        "--out",
        str(root / "out"),
        "--quiet",
    ]
    try:
        with pytest.raises(SystemExit) as exit_:
            main()
    finally:
        sys.argv = argv
    assert exit_.value.code in (None, 0)
    return root / "out"


def test_the_report_shows_the_timeline_with_the_measured_peak(compared):
    from PIL import Image

    from memprof.reporters.timeline import timeline_data, timeline_figure

    rs = load_results(compared / "results.json")
    by_method = {r.method: r for r in rs.results}
    assert list(by_method) == ["ft", "lora", "meft"] and all(isinstance(r.timeline, Timeline) for r in rs.results)
    ft, meft = by_method["ft"], by_method["meft"]
    assert ft.timeline.peak == ft.memory.peak  # stored: the measured peak to the byte
    assert meft.timeline.peak == meft.memory.peak
    # MEFT's peak falls in the forward or the backward (which one depends on the model's shape)
    assert meft.timeline.peak_phase in ("forward", "backward")
    data = timeline_data(rs)
    assert data["methods"]["ft"]["peak"]["bytes"] == ft.memory.peak
    assert data["methods"]["meft"]["peak"]["phase"] == meft.timeline.peak_phase
    fig = timeline_figure(data)
    div = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}[fig.axes[0].get_ylabel().split("(")[1].rstrip(")")]
    for ax, method in zip(fig.axes, data["methods"]):
        (marker,) = [line for line in ax.get_lines() if line.get_gid() == "peak"]
        assert ax.get_title() == method
        assert marker.get_xdata()[0] == data["methods"][method]["peak"]["event"]
        assert marker.get_ydata()[0] * div == pytest.approx(by_method[method].memory.peak, rel=1e-12)
    html = (compared / "report.html").read_text()
    assert "<figcaption>Live memory through one step at the largest configuration</figcaption>" in html
    png = Image.open(compared / "timeline.png").convert("L")
    assert png.width > 1000 and len(png.getcolors(1 << 16)) > 50  # drawn, not the empty placeholder


def test_every_timeline_value_replaced_by_garbage_is_refused_or_read_exactly(tmp_path):
    """As test_fail_closed_results does for the other fields: a timeline value replaced by garbage
    (or removed) is refused naming it, or read and written back the same."""
    import copy
    import math
    import re

    from memprof.results.result import ResultSet, write_json

    tl = downsample([8, 4], [0, 1, ~1], [P, A], {"forward": 1, "backward": 2, "end": 3})
    base = ResultSet(
        [
            Result(
                backbone="b",
                method="ft",
                engine="fake",
                target="cuda",
                dtype="fp32",
                attn_implementation="sdpa",
                seq_len=8,
                batch_size=1,
                timeline=tl,
            )
        ]
    ).to_dict()
    garbage = [None, True, -1, 1.5, math.nan, 2**64, "x", [], {}, "DELETE"]
    accepted = set()

    def paths(obj, prefix):
        for k, v in obj.items() if isinstance(obj, dict) else enumerate(obj):
            yield prefix + (k,)
            if isinstance(v, (dict, list)):
                yield from paths(v, prefix + (k,))

    for path in paths(base["results"][0]["timeline"], ("timeline",)):
        for value in garbage:
            data = copy.deepcopy(base)
            box = data["results"][0]
            for k in path[:-1]:
                box = box[k]
            if value == "DELETE":
                box.pop(path[-1]) if isinstance(box, dict) else box.__delitem__(path[-1])
            else:
                box[path[-1]] = value
            name = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in path).lstrip(".")
            (tmp_path / "g.json").write_text(json.dumps(data))
            try:
                rs = load_results(tmp_path / "g.json")
            except MemprofError as exc:
                assert "\n" not in str(exc) and re.search(r": timeline[ .\[]", str(exc)), (path, value, str(exc))
                continue
            accepted.add((name, repr(value)))
            assert load_results(write_json(rs, tmp_path / "again.json")).to_dict() == rs.to_dict()
    # a step records the phases it reaches: any of them may be missing
    assert accepted == {
        ("timeline.phases", "{}"),
        ("timeline.phases.forward", "'DELETE'"),
        ("timeline.phases.backward", "'DELETE'"),
        ("timeline.phases.end", "'DELETE'"),
    }


def test_a_baseline_drops_the_timelines_unless_layers_are_kept(tmp_path):
    from memprof.checks.gate import make_baseline
    from memprof.results.result import ResultSet, write_json

    tl = downsample([8, 4], [0, 1, ~1], [P, A], {"forward": 1, "backward": 2, "end": 3})
    rs = ResultSet(
        [
            Result(
                backbone="b",
                method="ft",
                engine="fake",
                target="cuda",
                dtype="fp32",
                attn_implementation="sdpa",
                seq_len=8,
                batch_size=1,
                timeline=tl,
            )
        ]
    )
    path = write_json(rs, tmp_path / "results.json")
    assert make_baseline(path).results[0].timeline is None
    assert make_baseline(path, keep_layers=True).results[0].timeline == tl
