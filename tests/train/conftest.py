"""Shared pieces for training tests: a tiny random teacher and a tiny stage recipe on disk."""

import copy

import pytest
import yaml

from tiny_stage import TINY_STAGE


@pytest.fixture()
def write_recipe(tmp_path, teacher_path):
    """write_recipe(**changes) -> path of a YAML recipe (nested keys as dotted strings)."""
    def write(name="stage.yaml", **changes):
        values = copy.deepcopy(TINY_STAGE)
        values["output_dir"] = str(tmp_path / name.replace(".yaml", ""))
        values["teacher"] = {"path": teacher_path, "layer": -1, "image_size": 56}
        for key, value in changes.items():
            target = values
            parts = key.split("__")
            for part in parts[:-1]:
                target = target.setdefault(part, {})
            if value is None:
                target.pop(parts[-1], None)
            else:
                target[parts[-1]] = value
        path = tmp_path / name
        path.write_text(yaml.safe_dump(values))
        return path
    return write
