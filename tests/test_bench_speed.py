"""The speed benchmark's plumbing: settings, measures' structure, the table, the JSON, the memory child.

No timing is asserted (timings are noise on a shared machine): only that figures are there,
positive and finite, and that the outputs say what was measured.
"""
from __future__ import annotations

import argparse
import json
import math
import os

import numpy as np
import pandas as pd
import pytest

from tsessm.bench import core_timing, peak_memory, speed
from tsessm.bench.timing import interleaved_times

TINY = {"d_model": 8, "n_layers": 1, "d_state": 8, "n_heads": 1}
ALL_BUT = lambda *keep: [a for g in speed.GROUPS if g not in keep for a in ("--skip", g)]  # noqa: E731


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    speed.add_arguments(parser)
    return parser.parse_args(list(argv))


def _result(measures: list[dict], quick: bool = True) -> dict:
    machine = {"cpu": "Test CPU 9000", "cores": 2, "torch_threads": 1, "torch": "2.x", "python": "3.x",
               "device": "cpu", "commit": "0123456789abcdef", "date": "2026-01-01T00:00:00+00:00",
               "load_average_start": 0.1}
    settings = {"quick": quick, "d_model": 128, "n_layers": 2, "d_state": 64, "n_heads": 1}
    return {"machine": machine, "settings": settings, "measures": measures}


def _finite_positive(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


# ----- settings and helpers ----------------------------------------------------------------
def test_quick_and_full_sizes_and_flags_override_them():
    full, quick = speed.settings(_args()), speed.settings(_args("--quick", "--repeats", "7"))
    assert full["lengths"] == [96, 336, 720] and full["n_series"] == 10_000 and full["history_rows"] == 100_000
    assert quick["quick"] is True and quick["lengths"] == [96] and quick["n_series"] < full["n_series"]
    assert quick["repeats"] == 7
    assert full["device"] in ("cpu", "cuda") and full["d_model"] == 128 and full["n_layers"] == 2
    skipped = speed.settings(_args("--skip", "memory", "--skip", "panel", "--skip", "memory"))["skip"]
    assert skipped == ["memory", "panel"]
    with pytest.raises(SystemExit):
        _args("--skip", "nonsense")


def test_interleaved_times_alternate_the_order_and_count_every_repeat():
    calls = []
    times = interleaved_times({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3, warmup=1)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warm-up, then a-b, b-a, a-b
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3}
    assert all(t >= 0 for ts in times.values() for t in ts)


# ----- measures ----------------------------------------------------------------------------
def test_parameter_counts_compare_whole_nets_per_head_count():
    width = {"d_model": 128, "n_layers": 2, "d_state": 64, "n_heads": 1}
    rows = {r["n_heads"]: r for r in core_timing.param_counts(width, [1, 3, 8])}
    assert sorted(rows) == [1, 8]  # 3 divides neither d_model nor d_state
    for r in rows.values():
        assert 0 < r["essm_core"] < r["essm_total"] and 0 < r["lstm_core"] < r["lstm_total"]
        assert r["total_ratio"] == pytest.approx(r["essm_total"] / r["lstm_total"])
    # heads split B and C into blocks; several heads bring the Linear head mixer, one head has none
    assert rows[8]["essm_ssm_layers"] < rows[1]["essm_ssm_layers"]
    assert rows[8]["essm_core"] - rows[8]["essm_ssm_layers"] > rows[1]["essm_core"] - rows[1]["essm_ssm_layers"]
    assert rows[1]["lstm_total"] == rows[8]["lstm_total"]


def test_core_times_compare_the_blocks_with_an_lstm_of_the_same_width():
    d = core_timing.core_fwd_bwd_times(TINY, 16, batch_size=4, repeats=2, device="cpu")
    assert d["length"] == 16 and d["batch_size"] == 4 and d["repeats"] == 2
    assert 0 < d["essm_params"] < d["lstm_params"]
    assert all(_finite_positive(d[k]) for k in ("essm_ms", "lstm_ms", "lstm_over_essm"))
    assert d["lstm_over_essm"] == pytest.approx(d["lstm_ms"] / d["essm_ms"])


def test_etth1_epoch_times_use_both_forecasters_defaults():
    d = core_timing.etth1_epoch_times(repeats=1, device="cpu")
    assert d["rows"] == 8640 and d["params"]["essm"]["d_model"] == d["params"]["lstm"]["d_model"]
    assert d["params"]["essm"]["mixer"] == "auto" and d["params"]["essm"]["lookback"] == 96
    assert len(d["essm_all_s"]) == len(d["lstm_all_s"]) == 1
    assert all(_finite_positive(d[k]) for k in ("essm_s", "lstm_s", "lstm_over_essm"))


def test_peak_memory_child_reports_its_own_peak(tmp_path, monkeypatch):
    for name in [k for k in os.environ if k.startswith("MALLOC_")]:
        monkeypatch.delenv(name)
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"date": pd.date_range("2020-01-01", periods=300, freq="h"),
                          "a": rng.standard_normal(300), "b": rng.standard_normal(300)})
    csv = tmp_path / "small.csv"
    frame.to_csv(csv, index=False)
    model = dict(horizon=4, lookback=16, **TINY, epochs=1, steps_per_epoch=1, batch_size=4, device="cpu")
    d = peak_memory.training_peak_memory(str(csv), model, threads=1)
    assert _finite_positive(d["rss_before_fit_mb"]) and d["peak_rss_mb"] >= d["rss_before_fit_mb"]
    assert d["peak_rss_mb"] < 4096  # a tiny net: a parent-sized figure would mean the wrong counter
    assert d["columns"] == ["a", "b"] and d["train_rows"] > 0 and d["model"]["lookback"] == 16
    with pytest.raises(RuntimeError, match="child failed"):
        peak_memory.training_peak_memory(str(tmp_path / "missing.csv"), model, threads=1)
    # extra environment reaches the child (which reports what it saw), not this process
    d = peak_memory.training_peak_memory(str(csv), model, threads=1, env={"MALLOC_MMAP_THRESHOLD_": "1048576"})
    assert d["env"] == {"MALLOC_MMAP_THRESHOLD_": "1048576"} and "MALLOC_MMAP_THRESHOLD_" not in os.environ
    # an allocator setting inherited from this process is reported too, so a default run cannot hide one
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    assert peak_memory.training_peak_memory(str(csv), model, threads=1)["env"] == {"MALLOC_ARENA_MAX": "2"}


# ----- outputs -----------------------------------------------------------------------------
def test_markdown_table_renders_every_measure_and_marks_unmet_goals():
    rows = [
        speed.measure("train_L96", "train time per epoch, LSTM ÷ eSSM, L=96", 6.5, "x", (">=", 5.0), {}),
        speed.measure("params", "parameters, eSSM ÷ LSTM", 38.6, "%", ("<=", 13.0), {}),
        speed.measure("panel", "batched observations/s", 250_000.0, "obs/s", (">=", 100_000.0), {}),
        speed.measure("memory", "peak RSS", 2500.0, "MB", ("<=", 2048.0), {}),
        speed.failed("backtest", FileNotFoundError("ETTh1.csv not found")),
    ]
    assert [r["met"] for r in rows] == [True, False, True, False, None]
    text = speed.markdown_table(_result(rows))
    lines = text.splitlines()
    assert "Test CPU 9000" in lines[0] and "2 cores" in lines[0] and "0123456" in lines[0] and "quick" in lines[0]
    table = [line for line in lines if line.startswith("| ") and "---" not in line]
    assert table[0] == "| measure | measured | goal | met |"
    body = dict(zip([r["label"] for r in rows], table[1:]))
    assert len(table) == 1 + len(rows)
    assert body["train time per epoch, LSTM ÷ eSSM, L=96"].endswith("| 6.5× | ≥ 5× | yes |")
    assert body["parameters, eSSM ÷ LSTM"].endswith("| 38.6 % | ≤ 13.0 % | **no** |")
    assert "250,000 /s" in body["batched observations/s"] and body["peak RSS"].endswith("| **no** |")
    assert "error: FileNotFoundError: ETTh1.csv not found" in body["backtest"]
    assert "quick" not in speed.markdown_table(_result(rows, quick=False)).splitlines()[0]


def test_json_is_written_atomically_and_round_trips(tmp_path, monkeypatch):
    path = tmp_path / "results" / "speed.json"
    result = _result([speed.measure("x", "x", np.float64(2.5), "x", (">=", 1.0), {"n": np.int64(3)})])
    speed.write_json(result, path)
    back = json.loads(path.read_text())
    assert back["measures"][0]["value"] == 2.5 and back["measures"][0]["detail"]["n"] == 3
    assert back["machine"] == result["machine"]

    def crash(fd):  # the write dies before the rename
        raise OSError("disk full")
    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError):
        speed.write_json(_result([]), path)
    assert json.loads(path.read_text()) == back  # the old file is whole
    assert sorted(p.name for p in path.parent.iterdir()) == ["speed.json"]  # no temp file left


def test_quick_run_with_cheap_measures_writes_a_valid_json(tmp_path, capsys):
    out = tmp_path / "speed.json"
    argv = ["--quick", "--out", str(out), "--device", "cpu", "--d-model", "8", "--d-state", "8", "--n-layers", "1",
            "--repeats", "3", "--history-rows", "1500", *ALL_BUT("params", "latency", "history", "recompute")]
    assert speed.main(argv) == 0
    result = json.loads(out.read_text())
    assert set(result) == {"machine", "settings", "measures"}
    assert {"cpu", "cores", "torch_threads", "torch", "python", "device", "commit", "date"} <= set(result["machine"])
    assert result["machine"]["device"] == "cpu" and result["settings"]["quick"] is True
    names = ["params", "params_total", "observe", "update_predict", "history", "recompute", "recompute_net"]
    assert [m["name"] for m in result["measures"]] == names
    for m in result["measures"]:
        assert _finite_positive(m["value"]) and isinstance(m["met"], bool) and m["goal"]["op"] in (">=", "<=")
        assert m["detail"]["seconds"] >= 0
    by_name = {m["name"]: m for m in result["measures"]}
    history = by_name["history"]["detail"]
    assert (history["history_short_rows"], history["history_long_rows"]) == (1000, 1500)
    latency = by_name["observe"]["detail"]
    assert by_name["observe"]["value"] == latency["observe_ms"] and by_name["observe"]["unit"] == "ms"
    assert by_name["update_predict"]["value"] == latency["update_predict_ms"]
    net = by_name["recompute_net"]["detail"]
    assert net["window"] == 720 and net["recompute_over_step"] == pytest.approx(net["recompute_ms"] / net["step_ms"])
    printed = capsys.readouterr().out
    assert "| measure | measured | goal | met |" in printed and all(m["label"] in printed for m in result["measures"])


def test_a_failing_measure_is_recorded_and_the_run_says_so(tmp_path):
    out = tmp_path / "speed.json"
    bad = tmp_path / "data"  # searched first: a wrong ETTh1 file (the shared one would be found otherwise)
    bad.mkdir()
    (bad / "ETTh1.csv").write_text("date,OT\n2020-01-01 00:00:00,1.0\n")
    argv = ["--quick", "--out", str(out), "--device", "cpu", "--data-dir", str(bad),
            "--d-model", "8", "--d-state", "8", "--n-layers", "1", *ALL_BUT("params", "backtest")]
    assert speed.main(argv) == 1
    params, _, backtest = json.loads(out.read_text())["measures"]
    assert params["value"] > 0
    assert backtest["value"] is None and backtest["met"] is None and "ETTh1" in backtest["detail"]["error"]
