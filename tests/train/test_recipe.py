"""Recipe validation: clear errors naming the key, before any compute."""

import pytest

from eve_vlm.train.recipe import RecipeError, load_recipe


def test_a_valid_recipe_loads(write_recipe):
    recipe = load_recipe(write_recipe())
    assert recipe.optim.lr == {"pel": 1e-2, "aligner": 1e-2} and recipe.aligning
    assert recipe.data.sources[0].kind == "shapes"


def test_overrides_apply_with_yaml_values(write_recipe):
    recipe = load_recipe(write_recipe(), ["optim.lr.pel=3e-4", "max_steps=2", "data.max_length=99"])
    assert recipe.optim.lr["pel"] == 3e-4 and recipe.max_steps == 2 and recipe.data.max_length == 99


@pytest.mark.parametrize(("changes", "message"), [
    ({"optim__lr__vision": 1e-3}, r"optim.lr.vision: unknown module"),
    ({"optim__betas_typo": 1}, r"optim.betas_typo: unknown key"),
    ({"learning_rate": 1}, r"learning_rate: unknown key"),
    ({"optim__lr": {"pel": 0}}, "nothing would train"),
    ({"precision": "int8"}, "precision='int8'"),
    ({"micro_batch": "two"}, "micro_batch='two': expected int"),
    ({"data__sources": [{"kind": "llava", "options": {"path": "/nonexistent/data.json"}}]},
     r"data.sources\[0\].options.path: /nonexistent/data.json does not exist"),
    ({"teacher": None}, "no teacher"),
    ({"model": {}}, "set init_from"),
])
def test_bad_recipes_name_the_key(write_recipe, changes, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(write_recipe(**changes))


def test_bad_override_syntax(write_recipe):
    with pytest.raises(RecipeError, match="expected key=value"):
        load_recipe(write_recipe(), ["max_steps"])
