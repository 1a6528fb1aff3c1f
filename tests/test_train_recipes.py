"""Recipes: every name the registry uses is defined, the papers' numbers, and --set overrides."""

import dataclasses

import pytest

import cnnlab
from cnnlab.train.recipes import RECIPES, Recipe, apply_overrides, get_recipe, parse_overrides

# CONTRACTS.md: the recipe names ModelInfo.recipe may use.
CONTRACT_NAMES = {
    "lecun1998", "krizhevsky2012", "zeiler2014", "simonyan2014", "lin2014_cifar", "szegedy2014",
    "ioffe2015", "szegedy2016", "szegedy2017", "he2016_imagenet", "he2016_cifar",
    "huang2016_cifar", "huang2017_cifar", "zagoruyko2016_cifar", "xie2017_cifar", "hu2018",
    "iandola2016", "howard2017", "sandler2018", "howard2019", "tan2019", "chen2017", "fast_cpu",
    "finetune", "linear_probe", "liu2021", "radosavovic2020", "liu2022",
}


def test_every_contract_name_is_a_recipe():
    assert set(RECIPES) == CONTRACT_NAMES


@pytest.mark.parametrize("name", cnnlab.list_models())
def test_every_registered_model_names_a_defined_recipe(name):
    recipe = cnnlab.model_info(name).recipe
    assert recipe in RECIPES, f"{name}: ModelInfo.recipe {recipe!r} is not a defined recipe"


def test_recipes_are_frozen_and_cite_a_section():
    r = get_recipe("he2016_cifar")
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.lr = 1.0  # type: ignore[misc]
    for recipe in RECIPES.values():
        assert recipe.citation, recipe.name
        for key in recipe.unstated:
            assert hasattr(recipe, key), f"{recipe.name}: unstated names unknown field {key}"


def test_he2016_cifar_is_section_4_2():
    r = get_recipe("he2016_cifar")
    # Sec. 4.2: "weight decay of 0.0001 and momentum of 0.9", "mini-batch size of 128",
    # lr 0.1 divided by 10 at 32k and 48k iterations, terminate at 64k, 45k/5k split.
    assert (r.lr, r.weight_decay, r.momentum, r.batch_size) == (0.1, 1e-4, 0.9, 128)
    assert (r.milestones, r.milestone_unit, r.gamma, r.max_steps) == ((32000, 48000), "step",
                                                                        0.1, 64000)
    assert (r.val_size, r.augment, r.crop_padding) == (5000, "crop_flip", 4)
    assert (r.warmup_lr, r.warmup_until_error) == (0.01, 80.0)
    assert "resnet110" in r.warmup_models
    # 45,000 // 128 = 351 steps per epoch; the epochs must not end the run before 64k steps.
    assert r.epochs * (45000 // 128) >= 64000


def test_lecun1998_global_rate_schedule():
    # Sec. III.C: 0.0005 (2 passes), 0.0002 (3), 0.0001 (3), 0.00005 (4), 0.00001 after; 20.
    r = get_recipe("lecun1998")
    etas = [0.0005 * f for f in r.factors]  # the schedule's shape, scaled to the paper's eta
    assert etas == pytest.approx([0.0005, 0.0002, 0.0001, 0.00005, 0.00001])
    assert r.milestones == (2, 2 + 3, 2 + 3 + 3, 2 + 3 + 3 + 4) and r.epochs == 20


def test_overrides_are_typed():
    o = parse_overrides(["lr=0.05", "epochs=30", "nesterov=true", "milestones=10,20",
                         "max_steps=none", "amp=bf16"])
    assert o == {"lr": 0.05, "epochs": 30, "nesterov": True, "milestones": (10, 20),
                 "max_steps": None, "amp": "bf16"}
    r = apply_overrides(get_recipe("fast_cpu"), o)
    assert (r.lr, r.epochs, r.milestones) == (0.05, 30, (10.0, 20.0))


def test_unknown_key_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown recipe key 'learning_rate'") as err:
        parse_overrides(["learning_rate=0.1"])
    assert "lr" in str(err.value) and "weight_decay" in str(err.value)


@pytest.mark.parametrize("pair", ["lr=fast", "epochs=2.5", "nesterov=maybe", "lr"])
def test_bad_values_are_errors(pair):
    with pytest.raises(ValueError, match="--set"):
        parse_overrides([pair])


def test_bad_choice_is_an_error():
    with pytest.raises(ValueError, match="optimizer must be one of sgd, adamw, rmsprop"):
        apply_overrides(get_recipe("fast_cpu"), parse_overrides(["optimizer=lbfgs"]))


def test_to_dict_round_trips():
    for recipe in RECIPES.values():
        assert Recipe.from_dict(recipe.to_dict()) == recipe


def test_warmup_models_are_registered_models():
    for recipe in RECIPES.values():
        for name in recipe.warmup_models:
            assert name in cnnlab.list_models(), f"{recipe.name}: no model named {name!r}"


def test_every_image_is_seen_by_default_and_old_checkpoints_resume_as_written():
    """drop_last is off unless asked; a checkpoint written before the field existed (its
    config has no drop_last) always dropped the last partial batch, and resumes so."""
    from cnnlab.train.recipes import RECIPES, Recipe

    assert not any(r.drop_last for r in RECIPES.values())
    config = RECIPES["fast_cpu"].to_dict()
    assert Recipe.from_dict(config).drop_last is False
    del config["drop_last"]
    assert Recipe.from_dict(config).drop_last is True
