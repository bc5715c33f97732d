"""Every benchmark runs end to end at tiny sizes and writes its JSON (no timing is asserted)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from bench.__main__ import BENCHMARKS
from bench.__main__ import main as bench_main

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(300)
FAST = ["--smoke", "--repeats", "1", "--warmup", "1", "--threads", "1"]  # 1 thread: fastest on a shared CPU


def _run(name: str, tmp_path: Path, *extra: str) -> dict:
    output = tmp_path / f"{name}.json"
    assert bench_main([name, *FAST, *extra, "--output", str(output)]) == 0
    result = json.loads(output.read_text())
    assert result["benchmark"] == name and result["smoke"] is True
    assert result["rows"], "no rows"
    assert result["machine"]["cpu"] and result["machine"]["torch"]
    assert result["load_average_start"] is not None
    return result


def _positive(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def test_vision(tmp_path):
    result = _run("vision", tmp_path)
    paths = {row["path"] for row in result["rows"]}
    assert {"EVE PEL+proj", "Fuyu patch proj", "LLaVA-1.5 CLIP-L/336+proj"} <= paths
    assert all(_positive(row["gflops"]) for row in result["rows"])
    assert len(result["targets"]) == 1


def test_ttft(tmp_path):
    result = _run("ttft", tmp_path, "--new-tokens", "2")
    measured = [row for row in result["rows"] if row.get("ttft_ms") is not None]
    assert {row["path"] for row in measured} == {"EVE", "EVE, logits_to_keep", "LLaVA-1.5", "Fuyu"}
    assert all(_positive(row["ttft_ms"]) and _positive(row["decode_tok_s"]) for row in measured)
    assert all(_positive(row["prefill_gflops"]) for row in result["rows"])


def test_train(tmp_path):
    result = _run("train", tmp_path, "--padding-batches", "2")
    (row,) = result["rows"]
    assert row["size"] == "tiny"
    assert 0 <= row["padding"] < 1 and 0 <= row["padding_grouped"] < 1 and 0 <= row["padding_ungrouped"] < 1
    assert _positive(row["tokens_s"]) and _positive(row["gflop_step"]) and _positive(row["mfu"])
    assert result["profiles"]["tiny"]["top_ops"]


def test_memory(tmp_path):
    result = _run("memory", tmp_path)
    assert {(row["size"], row["mode"]) for row in result["rows"]} == {("tiny", "train"), ("tiny", "infer")}
    assert all(row["peak_rss_mb"] >= row["rss_model_mb"] > 0 for row in result["rows"])


def test_vision_train(tmp_path):
    result = _run("vision_train", tmp_path)
    assert [row["impl"] for row in result["rows"]] == ["reference style (per-image loops)", "ours (batched)"]
    assert all(_positive(row["ms"]) for row in result["rows"])


def test_train_step(tmp_path):
    result = _run("train_step", tmp_path)
    assert [row["impl"] for row in result["rows"]] == ["reference style", "ours"]
    assert all(_positive(row["ms"]) and _positive(row["gflop"]) for row in result["rows"])
    assert result["targets"][0]["name"].startswith("full training step")


def test_gpu_script_smoke_on_cpu(tmp_path):
    """The prepared GPU script as the lead will start it (a fresh process), tiny and on the CPU."""
    env = {**os.environ, "OUT": str(tmp_path), "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([sys.executable, "bench/gpu.py", "--smoke"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=280)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "gpu.json").read_text())
    for section in ("device", "vision_train", "train_step", "train_nockpt", "train", "inference"):
        assert "error" not in result[section], result[section]
    assert _positive(result["train"]["tokens_per_s"]) and _positive(result["train"]["model_tflop_per_step"])
    assert _positive(result["inference"]["batch_1"]["ttft_ms"])
    assert _positive(result["vision_train"]["speedup"])
    assert _positive(result["train_step"]["speedup"]) and result["train_nockpt"]["checkpointing"] is False


def test_every_listed_benchmark_has_a_module():
    import importlib

    for name in BENCHMARKS:
        assert callable(importlib.import_module(f"bench.{name}").main)


def test_gpu_script_time_guard_skips_what_no_longer_fits(tmp_path):
    """A budget already spent: every section is skipped or interrupted, the JSON is still written."""
    output = tmp_path / "gpu.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([sys.executable, "bench/gpu.py", "--smoke", "--budget", "0.5", "--output", str(output)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(output.read_text())
    for section in ("device", "vision_train", "train", "inference"):
        assert "skipped" in result[section] or "GuardTimeout" in result[section].get("error", ""), result[section]


def test_train_in_bf16_autocast(tmp_path):
    result = _run("train", tmp_path, "--padding-batches", "2", "--precision", "bf16")
    (row,) = result["rows"]
    assert result["settings"]["precision"] == "bf16" and _positive(row["tokens_s"]) and _positive(row["mfu"])
    assert "bf16" in " ".join(result["notes"])
