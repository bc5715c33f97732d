"""What every benchmark shares: the machine's facts, timing, FLOP counting, the table and the JSON file.

FLOPs are counted with `torch.utils.flop_counter.FlopCounterMode`: one multiply-add = 2 FLOPs
(a matmul of (m, k) x (k, n) counts 2mkn), convolutions and attention likewise; norms,
activations, softmax and optimizer updates are not counted. Causal attention counts the full
square (as FlopCounterMode does). The CPU flash-attention kernel of `scaled_dot_product_attention`
is missing from FlopCounterMode's table, so it is added here with the same formula it uses for
the CUDA kernels.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

RESULTS_DIR = Path("runs/bench")
aten = torch.ops.aten


# --- FLOP counting ---------------------------------------------------------------------------------------
def _sdpa_forward_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    b, heads, q_len, head_dim = query_shape
    k_len, v_dim = key_shape[2], value_shape[3]
    return 2 * b * heads * q_len * k_len * head_dim + 2 * b * heads * q_len * k_len * v_dim  # QK^T, then AV


def _sdpa_backward_flops(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None,
                         **kwargs) -> int:
    return 2 * _sdpa_forward_flops(query_shape, key_shape, value_shape)  # dV, dP, dQ, dK: four matmuls


CPU_ATTENTION_FLOPS = {
    aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_forward_flops,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: _sdpa_backward_flops,
}


def flop_counter() -> FlopCounterMode:
    """A silent FlopCounterMode that also knows the CPU attention kernel."""
    return FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS)


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of everything `fn` runs (forward, and backward if it calls it).

    Modules whose parameters require grad must not run under `no_grad`/`inference_mode` here
    (FlopCounterMode's module tracker fails on them); freeze them or count with grad enabled.
    """
    with flop_counter() as counter:
        fn()
    return counter.get_total_flops()


# --- timing ---------------------------------------------------------------------------------------------
def sync(device: torch.device | str = "cpu") -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def measure(fn: Callable[[], Any], repeats: int, warmup: int, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Median and minimum wall time of `fn` over `repeats` runs after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "min_s": min(times), "times_s": times}


def measure_interleaved(cases: dict[str, Callable[[], Any]], repeats: int, warmup: int,
                        device: torch.device | str = "cpu") -> dict[str, dict[str, Any]]:
    """`measure` for several cases, run round-robin (case 1, 2, ..., then again): a change of load on a
    shared machine then hits every case alike, so their ratios stay fair."""
    for _ in range(warmup):
        for fn in cases.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(max(1, repeats)):
        for name, fn in cases.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: {"median_s": statistics.median(t), "min_s": min(t), "times_s": t} for name, t in times.items()}


def matmul_peak(size: int = 4096, repeats: int = 5, dtype: torch.dtype = torch.float32,
                device: str = "cpu") -> float:
    """FLOP/s of the fastest of `repeats` (size x size) @ (size x size) matmuls: the achievable peak."""
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    timing = measure(lambda: a @ b, repeats, warmup=1, device=device)
    return 2 * size**3 / timing["min_s"]


# --- memory ---------------------------------------------------------------------------------------------
def rss_mb() -> float:
    """Resident set size of this process now, in MiB."""
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (ru_maxrss), in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


# --- the machine ----------------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    import transformers

    info = {"cpu": cpu_model(), "logical_cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(), "platform": platform.platform()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


# --- command line, tables and results -------------------------------------------------------------------
def base_parser(name: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m bench {name}", description=description)
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / f"{name}.json",
                        help=f"where the JSON results go (default: {RESULTS_DIR / name}.json)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs before timing")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: proves the benchmark runs, in seconds")
    return parser


class Recorder:
    """Collects one benchmark's settings, rows, targets and notes, with the machine and the load."""

    def __init__(self, name: str, args: argparse.Namespace) -> None:
        if args.threads:
            torch.set_num_threads(args.threads)
        self.name = name
        self.started = time.time()
        self.result: dict[str, Any] = {
            "benchmark": name, "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "smoke": bool(args.smoke), "machine": machine_info(), "load_average_start": load_average(),
            "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "rows": [], "targets": [], "notes": [],
        }

    def row(self, **fields: Any) -> dict[str, Any]:
        self.result["rows"].append(fields)
        return fields

    def target(self, name: str, value: float, limit: float, met: bool, why: str = "") -> None:
        self.result["targets"].append({"name": name, "value": value, "limit": limit, "met": bool(met), "why": why})

    def note(self, text: str) -> None:
        self.result["notes"].append(text)

    def finish(self, output: Path, columns: Sequence[str], extra: dict[str, Any] | None = None) -> dict[str, Any]:
        self.result["load_average_end"] = load_average()
        self.result["seconds"] = round(time.time() - self.started, 1)
        self.result.update(extra or {})
        print_table(self.result["rows"], columns, title=f"{self.name} ({_machine_line(self.result)})")
        for target in self.result["targets"]:
            verdict = "MET" if target["met"] else "MISSED"
            print(f"target {target['name']}: {target['value']:.3g} vs {target['limit']:.3g} -> {verdict}"
                  + (f" ({target['why']})" if target["why"] else ""))
        for note in self.result["notes"]:
            print(f"note: {note}")
        write_json(self.result, output)
        print(f"wrote {output}")
        return self.result


def _machine_line(result: dict[str, Any]) -> str:
    m = result["machine"]
    load = result.get("load_average_start"), result.get("load_average_end")
    return (f"{m['cpu']}, {m['logical_cpus']} cpus, {m['torch_threads']} torch threads, torch {m['torch']}, "
            f"transformers {m['transformers']}; load avg {load[0]} -> {load[1]}")


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], title: str = "") -> None:
    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 1e5 else f"{value:.4g}"
        return str(value)

    table = [list(columns)] + [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(columns))]
    if title:
        print(f"\n{title}")
    for i, r in enumerate(table):
        print("  ".join(v.rjust(w) if i else v.ljust(w) for v, w in zip(r, widths)))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def write_json(result: dict[str, Any], output: Path) -> Path:
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return output
