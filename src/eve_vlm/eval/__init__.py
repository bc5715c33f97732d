"""Evaluation: metrics (pure functions), one adapter per benchmark, and a resumable runner.

``run_benchmark(name, data_dir, output_dir, answer_fn)`` is the entry point; ``BENCHMARKS`` lists
the adapters. See ``eve_vlm.eval.base`` for the adapter contract.
"""

from eve_vlm.eval.base import BenchmarkDataError, EvalItem
from eve_vlm.eval.runner import BENCHMARKS, read_predictions, results_table, run_benchmark

__all__ = [
    "BENCHMARKS",
    "BenchmarkDataError",
    "EvalItem",
    "read_predictions",
    "results_table",
    "run_benchmark",
]
