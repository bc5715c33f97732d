"""`eve-vlm bench`: lists and runs the checkout's benchmarks; says clearly when there is no checkout."""

import json

import pytest

from eve_vlm.bench import commands
from eve_vlm.cli import main


def test_lists_benchmarks_without_a_name(capsys):
    assert main(["bench"]) == 0
    out = capsys.readouterr().out
    for name in ("vision", "ttft", "train", "memory", "vision_train", "train_step", "gpu"):
        assert f"  {name}" in out


def test_runs_a_benchmark_with_its_options(tmp_path):
    output = tmp_path / "vision.json"
    assert main(["bench", "vision", "--smoke", "--repeats", "1", "--output", str(output)]) == 0
    assert json.loads(output.read_text())["benchmark"] == "vision"


def test_finds_the_checkout_from_a_subfolder():
    root = commands.find_checkout()
    assert root is not None and (root / "bench" / "__main__.py").is_file()
    assert commands.find_checkout(root / "src" / "eve_vlm") == root


def test_without_a_checkout_it_says_where_the_benchmarks_live(monkeypatch, capsys):
    monkeypatch.setattr(commands, "find_checkout", lambda start=None: None)
    assert main(["bench", "vision"]) == 2
    assert "bench/ folder of a source checkout" in capsys.readouterr().err


def test_unknown_benchmark_is_an_error(capsys):
    assert main(["bench", "nope"]) == 2
    assert "unknown benchmark 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("helper", ["--help"])
def test_benchmark_help_goes_to_the_benchmark(helper, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "train", helper])
    assert exit_info.value.code == 0
    assert "--padding-batches" in capsys.readouterr().out
