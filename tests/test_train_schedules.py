"""Schedules against values worked out by hand from each paper's rule."""

import dataclasses
import math

import pytest

from cnnlab.train import schedules as S
from cnnlab.train.recipes import build_schedule, get_recipe

# (schedule, step, expected lr): the expected values are the papers' rules done by hand.
CASES = [
    (S.Constant(0.1), 12345, 0.1),
    # He et al. 2016 CIFAR: 0.1, /10 at 32k and 48k iterations
    (S.MultiStep(0.1, (32000, 48000)), 0, 0.1),
    (S.MultiStep(0.1, (32000, 48000)), 31999, 0.1),
    (S.MultiStep(0.1, (32000, 48000)), 32000, 0.01),
    (S.MultiStep(0.1, (32000, 48000)), 48000, 0.001),
    (S.MultiStep(0.1, (32000, 48000)), 63999, 0.001),
    # WRN: x0.2 at 60, 120, 160 (one step per epoch here)
    (S.MultiStep(0.1, (60, 120, 160), 0.2), 130, 0.1 * 0.04),
    # LeCun 1998: 0.0005, 0.0002, 0.0001, 0.00005, 0.00001 (as factors of 0.0005)
    (S.MultiStep(0.0005, (2, 5, 8, 12), factors=(1, 0.4, 0.2, 0.1, 0.02)), 4, 0.0002),
    (S.MultiStep(0.0005, (2, 5, 8, 12), factors=(1, 0.4, 0.2, 0.1, 0.02)), 19, 0.00001),
    # Inception-v3: 0.045 x 0.94 every 2 epochs (10 steps/epoch): step 45 is epoch 4.5 -> 2 decays
    (S.Exponential(0.045, 0.94, 20), 45, 0.045 * 0.94**2),
    # Cosine: halfway is the mean of the ends, the end is final_lr
    (S.Cosine(1.0, 100), 50, 0.5),
    (S.Cosine(1.0, 100, 0.2), 100, 0.2),
    (S.Cosine(1.0, 100), 25, (1 + math.cos(math.pi / 4)) / 2),
    # Poly power 1 (SqueezeNet): linear to zero
    (S.Poly(0.04, 1000), 250, 0.03),
    # One-cycle: 0.04 -> 1.0 at 25 of 100 steps, then down to 1e-4 at 100
    (S.OneCycle(1.0, 100, 0.25, 25, 1e4), 0, 0.04),
    (S.OneCycle(1.0, 100, 0.25, 25, 1e4), 10, 0.04 + 0.96 * 10 / 25),
    (S.OneCycle(1.0, 100, 0.25, 25, 1e4), 25, 1.0),
    (S.OneCycle(1.0, 100, 0.25, 25, 1e4), 100, 1e-4),
    (S.OneCycle(1.0, 100, 0.25, 25, 1e4), 62.5, 1.0 + (1e-4 - 1.0) / 2),
    # Linear warm-up over 10 steps to a constant 0.5
    (S.Warmup(S.Constant(0.5), 10), 0, 0.0),
    (S.Warmup(S.Constant(0.5), 10), 4, 0.2),
    (S.Warmup(S.Constant(0.5), 10), 10, 0.5),
]


@pytest.mark.parametrize(("schedule", "step", "expected"), CASES)
def test_schedule_values(schedule, step, expected):
    assert schedule.lr_at(step) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_plateau_divides_by_ten_after_patience_and_at_most_three_times():
    p = S.Plateau(0.01, patience=2, max_drops=3)
    errors = [50, 40, 40, 40, 39.999, 39.999, 39.999, 39.999, 39.999, 39.999, 39.999, 39.999]
    for epoch, err in enumerate(errors):
        p.observe(step=(epoch + 1) * 10, error=err)
    # no improvement at epochs 3, 4 -> drop from step 40; 5 (39.999 within threshold), 6 ->
    # drop from step 60; 7, 8 -> step 80; then max_drops reached.
    assert p.state.drops == [40, 60, 80]
    assert p.lr_at(39) == 0.01 and p.lr_at(40) == pytest.approx(0.001)
    assert p.lr_at(1000) == pytest.approx(1e-5)


def test_plateau_state_round_trips():
    p = S.Plateau(0.1, patience=1)
    p.observe(10, 30.0)
    p.observe(20, 31.0)
    q = S.Plateau(0.1, patience=1)
    q.load_state_dict(p.state_dict())
    assert [q.lr_at(s) for s in (0, 19, 20)] == [p.lr_at(s) for s in (0, 19, 20)]


def test_resnet110_warmup_until_train_error_below_80():
    inner = S.MultiStep(0.1, (32000, 48000))
    w = S.WarmupUntil(inner, 0.01, below=80.0)
    for step, err in enumerate([90.0, 85.0, 81.0]):
        w.observe_step(step, err)
        assert w.lr_at(step + 1) == 0.01
    w.observe_step(3, 79.0)
    assert w.ended_at == 4
    assert w.lr_at(3) == 0.01 and w.lr_at(4) == 0.1 and w.lr_at(32000) == pytest.approx(0.01)


def test_he2016_cifar_recipe_schedule_in_iterations():
    r = get_recipe("he2016_cifar")
    sched = build_schedule(r, steps_per_epoch=351)  # 45,000 // 128
    assert sched.lr_at(0) == 0.01  # warm-up wrapper present (dropped for non-110 models)
    from cnnlab.train.recipes import recipe_for_model

    plain = build_schedule(recipe_for_model("resnet20", r), 351)
    assert [plain.lr_at(s) for s in (0, 31999, 32000, 48000)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.001]
    )
    assert math.isclose(build_schedule(recipe_for_model("resnet110", r), 351).lr_at(0), 0.01)


def test_epoch_milestones_scale_with_steps_per_epoch():
    r = get_recipe("zagoruyko2016_cifar")
    sched = build_schedule(r, steps_per_epoch=391)
    assert sched.lr_at(60 * 391 - 1) == 0.1
    assert sched.lr_at(60 * 391) == pytest.approx(0.02)
    assert sched.lr_at(199 * 391) == pytest.approx(0.1 * 0.2**3)


def test_linear_lr_scaling_with_gradual_warmup_goyal2017():
    """Goyal et al. 2017: ResNet-50 at batch kn = 8192 with lr 0.1 x kn / 256 = 3.2 (Sec. 2.1,
    5.1), reached by a linear warm-up from 0.1 over 5 epochs (Sec. 2.2); then the recipe's
    own drops (/10 at epochs 30, 60, 80). 1,281,167 images / 8192 = 156.4: 157 steps an
    epoch (the last one short), so the warm-up is 5 x 157 = 785 steps."""
    import dataclasses

    from cnnlab.train.recipes import Recipe, scaled_lr

    r = Recipe(name="goyal", citation="Goyal et al. 2017", lr=0.1, batch_size=8192,
               lr_reference_batch=256, schedule="multistep", milestones=(30, 60, 80),
               epochs=90)
    assert scaled_lr(r) == pytest.approx(3.2)
    sched = build_schedule(r, steps_per_epoch=157)
    assert sched.lr_at(0) == pytest.approx(0.1)
    assert sched.lr_at(392) == pytest.approx(0.1 + (3.2 - 0.1) * 392 / 785)  # 1.648
    assert sched.lr_at(784) == pytest.approx(0.1 + 3.1 * 784 / 785)
    assert sched.lr_at(785) == pytest.approx(3.2)
    assert sched.lr_at(30 * 157 - 1) == pytest.approx(3.2)
    assert sched.lr_at(30 * 157) == pytest.approx(0.32)
    assert sched.lr_at(80 * 157) == pytest.approx(0.0032)
    # off by default, in every paper recipe: the schedule is the recipe's own
    off = dataclasses.replace(r, lr_reference_batch=0)
    assert build_schedule(off, 157).lr_at(0) == pytest.approx(0.1)
    from cnnlab.train.recipes import RECIPES

    assert all(recipe.lr_reference_batch == 0 for recipe in RECIPES.values())
    # a recipe with its own warm-up: that one climbs (from 0) to the scaled rate, no second one
    own = build_schedule(dataclasses.replace(r, warmup_epochs=1.0), steps_per_epoch=157)
    assert own.lr_at(0) == 0.0
    assert own.lr_at(100) == pytest.approx(3.2 * 100 / 157)
    assert own.lr_at(157) == pytest.approx(3.2)
    # a smaller batch scales the rate down, used from the first step: no warm-up from 0.1
    down = dataclasses.replace(r, batch_size=64)
    assert scaled_lr(down) == pytest.approx(0.025)
    assert build_schedule(down, steps_per_epoch=157).lr_at(0) == pytest.approx(0.025)


def test_scale_lr_flag_scales_against_the_recipes_own_batch():
    from cnnlab.train.run import RunSpec, describe, resolve_recipe

    spec = RunSpec(model="resnet50", data="imagenet", batch_size=1024, scale_lr=True)
    r = resolve_recipe(spec, None, "he2016_imagenet")  # batch 256, lr 0.1 (He et al. 2016)
    assert (r.batch_size, r.lr_reference_batch, r.lr) == (1024, 256, 0.1)
    assert build_schedule(r, 100).lr_at(500) == pytest.approx(0.4)  # after 5 x 100 steps
    assert "lr 0.1 x 1024/256 = 0.4 after 5 warm-up epochs" in describe(r)
    plain = resolve_recipe(RunSpec(model="resnet50", data="imagenet", batch_size=1024), None,
                           "he2016_imagenet")
    assert plain.lr_reference_batch == 0 and build_schedule(plain, 100).lr_at(500) == 0.1


class _Loader:
    """The few attributes of cnnlab's loader that the last-batch check reads."""

    def __init__(self, n: int, batch_size: int, world_size: int) -> None:
        self.n, self.batch_size, self.world_size, self.drop_last = n, batch_size, world_size, False

    def __len__(self) -> int:
        return -(-self.n // (self.batch_size * self.world_size))

    def global_batch_images(self, i: int) -> int:
        step = self.batch_size * self.world_size
        return min(step, self.n - i * step)


def test_a_one_image_share_of_the_last_batch_is_refused_for_batchnorm_unless_synced():
    import torch.nn as nn

    from cnnlab.train.recipes import get_recipe
    from cnnlab.train.run import _check_last_batch

    bn = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    recipe = get_recipe("fast_cpu")
    # 129 = 2 x 64 + 1: one image left for the last step of one process
    with pytest.raises(ValueError, match=r"129 images mod 64\) would give the process a single"):
        _check_last_batch(_Loader(129, 64, 1), bn, "net", recipe)
    # 2 ranks x 32: the last global batch of 3 gives one rank a single image (mod 64 again)
    with pytest.raises(ValueError, match="mod 64.*one of the processes"):
        _check_last_batch(_Loader(131, 32, 2), bn, "net", recipe)
    # with SyncBatchNorm the statistics span both ranks' three images: allowed
    _check_last_batch(_Loader(131, 32, 2), bn, "net", dataclasses.replace(recipe, sync_bn=True))
    # two images left, or no BatchNorm: nothing to refuse
    _check_last_batch(_Loader(130, 64, 1), bn, "net", recipe)
    _check_last_batch(_Loader(129, 64, 1), nn.Conv2d(1, 2, 3), "net", recipe)
