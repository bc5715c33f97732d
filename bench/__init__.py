"""Benchmarks of eve-vlm (not tests): `python -m bench NAME` or `eve-vlm bench NAME`.

Each benchmark is one small self-contained module with `main(argv) -> int`; it prints a table and
writes JSON (default `runs/bench/NAME.json`). docs/benchmarks.md records the numbers measured.
"""
