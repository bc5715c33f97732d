"""The `eve-vlm` entry point: every area's commands are there; a missing optional package is reported."""

import builtins
import sys

import pytest

from eve_vlm import cli


def test_all_commands_are_registered():
    parser = cli.build_parser()
    commands = set(parser._subparsers._group_actions[0].choices)
    assert {"train", "demo", "chat", "generate", "serve", "eval", "convert-official", "export-official"} <= commands


def test_missing_optional_dependency_names_it(monkeypatch):
    real_import = builtins.__import__

    def no_fastapi(name, *args, **kwargs):
        if name == "fastapi" or name.startswith("fastapi."):
            raise ModuleNotFoundError("No module named 'fastapi'", name="fastapi")
        return real_import(name, *args, **kwargs)

    for module in [m for m in sys.modules if m.startswith("eve_vlm.serve") or m.startswith("fastapi")]:
        monkeypatch.delitem(sys.modules, module)
    monkeypatch.setattr(builtins, "__import__", no_fastapi)
    with pytest.raises(SystemExit, match="needs the package 'fastapi'"):
        cli.main(["serve", "--model", "x"])
