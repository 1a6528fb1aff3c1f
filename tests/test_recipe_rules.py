"""Every recipe field's range and type, checked in one place (recipes.RULES), with errors that
name the field, the valid range and, from the CLI, the flag the user typed."""

import dataclasses

import pytest

from cnnlab.cli import main
from cnnlab.train.recipes import RECIPES, RULES, Recipe, get_recipe, parse_overrides


def test_every_field_has_a_rule():
    assert {f.name for f in dataclasses.fields(Recipe)} == set(RULES)


def test_every_paper_recipe_passes_its_rules():
    assert len(RECIPES) > 20  # constructing them ran the checks; none raised


# (the --set pair, the words the error must hold: field, range, the value)
BAD_SETS = [
    ("decay_every=0", "decay_every must be a finite number > 0, got 0.0"),
    ("label_smoothing=2", "label_smoothing must be a finite number in [0, 1), got 2.0"),
    ("crop_padding=-40", "crop_padding must be an integer >= 0, got -40"),
    ("max_steps=-5", "max_steps must be an integer >= 1 (or none), got -5"),
    ("lr=nan", "lr must be a finite number > 0, got nan"),
    ("lr=inf", "lr must be a finite number > 0, got inf"),
    ("lr=-0.1", "lr must be a finite number > 0, got -0.1"),
    ("seed=1e23", "seed must be an integer in [0, 9223372036854775807]"),
    ("seed=100000000000000000000000", "seed must be an integer in [0, 9223372036854775807]"),
    ("betas=0.9", "betas must be 2 values, each a finite number in [0, 1), got [0.9]"),
    ("betas=0.9,1.5", "betas must be 2 values, each a finite number in [0, 1)"),
    ("momentum=1", "momentum must be a finite number in [0, 1), got 1.0"),
    ("gamma=0", "gamma must be a finite number in (0, 1], got 0.0"),
    ("onecycle_pct=1", "onecycle_pct must be a finite number in (0, 1), got 1.0"),
    ("ema_decay=1", "ema_decay must be a finite number in [0, 1), got 1.0"),
    ("weight_decay=-1e-4", "weight_decay must be a finite number >= 0"),
    ("batch_size=0", "batch_size must be an integer >= 1, got 0"),
    ("epochs=0", "epochs must be an integer >= 1, got 0"),
    ("epochs=2.5", "epochs must be an integer >= 1"),
    ("val_size=-1", "val_size must be an integer >= 0, got -1"),
    ("milestones=10,-1", "milestones must be a comma-separated list, each a finite number >= 0"),
    ("warmup_until_error=101", "warmup_until_error must be a finite number in [0, 100]"),
    ("nesterov=maybe", "nesterov must be true or false"),
]


@pytest.mark.parametrize("pair, words", BAD_SETS)
def test_bad_set_names_field_and_range(pair, words):
    with pytest.raises(ValueError) as err:
        parse_overrides([pair])
    assert str(err.value) == f"--set {pair}: {words}" or str(err.value).startswith(
        f"--set {pair}: {words}")


@pytest.mark.parametrize("pair, words", BAD_SETS[:8])
def test_bad_set_from_the_cli_is_one_line_exit_2(capsys, tmp_path, pair, words):
    code = main(["train", "lenet5_modern", "--data", "mnist-sample", "--out",
                 str(tmp_path / "run"), "--set", pair])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"cnnlab: error: --set {pair}: {words}")
    assert not (tmp_path / "run").exists()


def test_constructed_and_loaded_recipes_are_checked_too():
    with pytest.raises(ValueError, match="recipe x: lr must be a finite number > 0, got 'fast'"):
        Recipe(name="x", citation="c", lr="fast")
    bad = dict(get_recipe("fast_cpu").to_dict(), betas=[0.9])  # e.g. a checkpoint's config
    with pytest.raises(ValueError, match="betas must be 2 values"):
        Recipe.from_dict(bad)
    with pytest.raises(ValueError, match="milestones must be increasing"):
        Recipe(name="x", citation="c", milestones=(20, 10))
    with pytest.raises(ValueError, match="lr must be a finite number > 0, got True"):
        Recipe(name="x", citation="c", lr=True)


@pytest.mark.parametrize("flag, value", [("--epochs", "0"), ("--batch-size", "-3"),
                                         ("--epochs", "two")])
def test_errors_name_the_flag_the_user_typed(capsys, tmp_path, flag, value):
    code = main(["train", "lenet5_modern", "--data", "mnist-sample", "--out",
                 str(tmp_path / "run"), flag, value])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert f"{flag} must be an integer >= 1, got {value!r}" in err
    assert "epochs must be" not in err.replace(flag, "") and "recipe" not in err
