"""Every paper recipe's values, retyped from its paper's section (or, where the paper is
silent, from the source the recipe names), and its schedule's magnitudes by hand.

The expected values below are typed from the papers, never read from cnnlab.train.recipes.
"""

from __future__ import annotations

import math

import pytest

from cnnlab.train.recipes import RECIPES, build_schedule, get_recipe, recipe_for_model

PAPERS: dict[str, dict] = {
    # LeCun et al. 1998, Sec. III.C: 20 passes; the global rate's phases last 2, 3, 3, 4
    # passes at 0.0005, 0.0002, 0.0001, 0.00005, then 0.00001 (kept as relative factors).
    # Batch 16, lr 0.01 and plain SGD replace per-pattern SDLM (listed as unstated).
    "lecun1998": dict(optimizer="sgd", lr=0.01, momentum=0.0, batch_size=16, epochs=20,
                      schedule="multistep", milestones=(2, 5, 8, 12),
                      factors=(1.0, 0.4, 0.2, 0.1, 0.02)),
    # Krizhevsky et al. 2012, Sec. 5: batch 128, momentum 0.9, weight decay 0.0005, lr 0.01
    # divided by 10 when the validation error stops improving, three times, ~90 cycles;
    # Sec. 4.1: PCA lighting with standard deviation 0.1.
    "krizhevsky2012": dict(optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=0.0005,
                           batch_size=128, epochs=90, schedule="plateau", gamma=0.1,
                           plateau_max_drops=3, plateau_monitor="val", pca_lighting=0.1),
    # Zeiler & Fergus 2014, Sec. 3: batch 128, lr 1e-2, momentum 0.9, annealed manually when
    # the validation error plateaus, 70 epochs; crops with horizontal flips.
    "zeiler2014": dict(optimizer="sgd", lr=0.01, momentum=0.9, batch_size=128, epochs=70,
                       schedule="plateau", plateau_monitor="val", augment="crop_flip"),
    # Simonyan & Zisserman 2015, Sec. 3.1: batch 256, momentum 0.9, weight decay 5e-4, lr 1e-2
    # divided by 10 when the validation accuracy stops improving, 3 times, 74 epochs.
    "simonyan2014": dict(optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4,
                         batch_size=256, epochs=74, schedule="plateau", gamma=0.1,
                         plateau_max_drops=3, plateau_monitor="val"),
    # Lin et al. 2014, Sec. 4.1: mini-batches of 128; the rate is lowered by a scale of 10
    # when the *training* accuracy stops improving, "repeated once such that the final
    # learning rate is 1% of the initial value": two drops.
    "lin2014_cifar": dict(optimizer="sgd", batch_size=128, schedule="plateau", gamma=0.1,
                          plateau_max_drops=2, plateau_monitor="train"),
    # Szegedy et al. 2015, Sec. 6: SGD with 0.9 momentum, the rate decreased by 4% every 8
    # epochs; Sec. 5: the auxiliary losses weighted by 0.3; Polyak averaging.
    "szegedy2014": dict(optimizer="sgd", momentum=0.9, schedule="exponential", gamma=0.96,
                        decay_every=8, aux_loss_weight=0.3),
    # Ioffe & Szegedy 2015, Sec. 4.2.1: BN-x5's initial rate 0.0075 (5x Inception's 0.0015),
    # the decay 6 times faster, dropout removed, L2 reduced 5x; Sec. 4.2: batch 32 (listed
    # as unstated in the recipe); momentum.
    "ioffe2015": dict(optimizer="sgd", lr=0.0075, momentum=0.9, batch_size=32,
                      schedule="exponential", gamma=0.96, decay_every=8 / 6),
    # Szegedy et al. 2016, Sec. 8: batch 32, 100 epochs, RMSProp with decay 0.9 and eps 1.0,
    # lr 0.045 decayed every two epochs by 0.94, gradient clipping at 2.0; Sec. 7: label
    # smoothing eps = 0.1.
    "szegedy2016": dict(optimizer="rmsprop", lr=0.045, alpha=0.9, eps=1.0, batch_size=32,
                        epochs=100, schedule="exponential", gamma=0.94, decay_every=2,
                        grad_clip=2.0, label_smoothing=0.1),
    # Szegedy et al. 2017, Sec. 4: RMSProp decay 0.9, eps 1.0, lr 0.045 decayed every two
    # epochs by 0.94; the rest (batch, epochs, smoothing) follows Inception-v3.
    "szegedy2017": dict(optimizer="rmsprop", lr=0.045, alpha=0.9, eps=1.0, batch_size=32,
                        epochs=100, schedule="exponential", gamma=0.94, decay_every=2,
                        label_smoothing=0.1),
    # He et al. 2016, Sec. 3.4: batch 256, lr 0.1 divided by 10 when the error plateaus, up to
    # 60e4 iterations, weight decay 0.0001, momentum 0.9.
    "he2016_imagenet": dict(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=0.0001,
                            batch_size=256, max_steps=600_000, schedule="plateau", gamma=0.1),
    # He et al. 2016, Sec. 4.2: wd 0.0001, momentum 0.9, batch 128, lr 0.1 /10 at 32k and 48k
    # iterations, stop at 64k, 45k/5k split, 4-pixel padding; ResNet-110 warms up at 0.01
    # until the training error is below 80%.
    "he2016_cifar": dict(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=0.0001,
                         batch_size=128, max_steps=64_000, schedule="multistep",
                         milestones=(32_000, 48_000), milestone_unit="step", gamma=0.1,
                         val_size=5000, crop_padding=4, warmup_lr=0.01,
                         warmup_until_error=80.0),
    # Huang et al. 2016 (stochastic depth), Sec. 4: 500 epochs, batch 128, lr 0.1 divided by
    # 10 after epochs 250 and 375, weight decay 1e-4, Nesterov momentum 0.9.
    "huang2016_cifar": dict(optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True,
                            weight_decay=1e-4, batch_size=128, epochs=500,
                            schedule="multistep", milestones=(250, 375), gamma=0.1),
    # Huang et al. 2017 (DenseNet), Sec. 4.2: batch 64 for 300 epochs, lr 0.1 divided by 10 at
    # 50% and 75% of the epochs, weight decay 1e-4, Nesterov momentum 0.9.
    "huang2017_cifar": dict(optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True,
                            weight_decay=1e-4, batch_size=64, epochs=300,
                            schedule="multistep", milestones=(0.5 * 300, 0.75 * 300), gamma=0.1),
    # Zagoruyko & Komodakis 2016: Nesterov momentum 0.9, lr 0.1, weight decay 0.0005, batch
    # 128; lr multiplied by 0.2 at epochs 60, 120, 160; 200 epochs.
    "zagoruyko2016_cifar": dict(optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True,
                                weight_decay=0.0005, batch_size=128, epochs=200,
                                schedule="multistep", milestones=(60, 120, 160), gamma=0.2),
    # Xie et al. 2017 (ResNeXt), Sec. 5.3 (CIFAR): batch 128, weight decay 0.0005, momentum
    # 0.9, lr 0.1 divided by 10 at the 150th and 225th epochs, 300 epochs.
    "xie2017_cifar": dict(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=0.0005,
                          batch_size=128, epochs=300, schedule="multistep",
                          milestones=(150, 225), gamma=0.1),
    # Hu et al. 2018 (SENet), Sec. 6.1: momentum 0.9, minibatch 1024, lr 0.6 decreased by 10
    # every 30 epochs, 100 epochs.
    "hu2018": dict(optimizer="sgd", lr=0.6, momentum=0.9, batch_size=1024, epochs=100,
                   schedule="multistep", milestones=(30, 60, 90), gamma=0.1),
    # Iandola et al. 2016: the released SqueezeNet v1.0 solver.prototxt: base_lr 0.04, poly
    # (power 1) over 170,000 iterations, momentum 0.9, weight decay 0.0002, batch 512.
    "iandola2016": dict(optimizer="sgd", lr=0.04, momentum=0.9, weight_decay=0.0002,
                        batch_size=512, max_steps=170_000, schedule="poly"),
    # Howard et al. 2017 (MobileNets), Sec. 3.2: RMSprop as Inception-v3 (decay 0.9, eps 1.0,
    # lr 0.045, 0.94 every 2 epochs), little or no weight decay on the depthwise filters.
    "howard2017": dict(optimizer="rmsprop", lr=0.045, alpha=0.9, eps=1.0,
                       schedule="exponential", gamma=0.94, decay_every=2),
    # Sandler et al. 2018 (MobileNetV2), Sec. 6.1: RMSProp with decay and momentum 0.9, weight
    # decay 0.00004, lr 0.045 decayed by 0.98 per epoch, batch 96.
    "sandler2018": dict(optimizer="rmsprop", alpha=0.9, momentum=0.9, weight_decay=0.00004,
                        lr=0.045, schedule="exponential", gamma=0.98, decay_every=1,
                        batch_size=96),
    # Howard et al. 2019 (MobileNetV3), Sec. 6.1: RMSProp with 0.9 momentum, lr 0.1, batch
    # 4096, "learning rate decay rate of 0.01 every 3 epochs" (x0.99), L2 1e-5, EMA 0.9998.
    "howard2019": dict(optimizer="rmsprop", momentum=0.9, lr=0.1, batch_size=4096,
                       schedule="exponential", gamma=1 - 0.01, decay_every=3,
                       weight_decay=1e-5, ema_decay=0.9998),
    # Tan & Le 2019 (EfficientNet), Sec. 5.2: RMSProp decay 0.9 momentum 0.9, weight decay
    # 1e-5, lr 0.256 decaying by 0.97 every 2.4 epochs.
    "tan2019": dict(optimizer="rmsprop", alpha=0.9, momentum=0.9, weight_decay=1e-5, lr=0.256,
                    schedule="exponential", gamma=0.97, decay_every=2.4),
    # Chen et al. 2017 (DPN), Sec. 5.1: the rate divided by 10 when the training accuracy
    # plateaus (the other values are unverified and listed as unstated in the recipe).
    # Liu et al. 2022 (ConvNeXt), Appendix A.1 Table 5 (ImageNet-1K training): AdamW with
    # momentum (0.9, 0.999), lr 4e-3, weight decay 0.05, batch 4096, 300 epochs, cosine decay,
    # 20 linear warm-up epochs, label smoothing 0.1, EMA 0.9999.
    "liu2022": dict(optimizer="adamw", lr=4e-3, betas=(0.9, 0.999), weight_decay=0.05,
                    batch_size=4096, epochs=300, schedule="cosine", warmup_epochs=20,
                    label_smoothing=0.1, ema_decay=0.9999),
    "chen2017": dict(optimizer="sgd", schedule="plateau", gamma=0.1, plateau_monitor="train"),
    # Liu et al. 2021 (Swin), Sec. 4.1: AdamW for 300 epochs, cosine decay with 20 epochs of
    # linear warm-up, batch 1024, initial lr 0.001, weight decay 0.05; Appendix A2.1: gradient
    # clipping with a max norm of 5.
    "liu2021": dict(optimizer="adamw", lr=0.001, weight_decay=0.05, batch_size=1024,
                    epochs=300, schedule="cosine", warmup_epochs=20, grad_clip=5.0),
    # Girshick et al. 2014 (R-CNN), Sec. 2.3: fine-tuning starts SGD at 1/10 of the
    # pre-training rate (the backbone here; the new head at the full rate).
    "finetune": dict(optimizer="sgd", backbone_lr_scale=0.1),
    # Kornblith et al. 2019, Sec. 3: a linear classifier on frozen features of central crops,
    # without data augmentation.
    "linear_probe": dict(augment="none"),
    # Radosavovic et al. 2020 (RegNet): the released pycls configs (RegNet*_dds_8gpu.yaml),
    # as the recipe's source says: SGD momentum 0.9 (Nesterov), lr 0.4 for batch 1024,
    # half-period cosine after 5 warm-up epochs, weight decay 5e-5, 100 epochs.
    "radosavovic2020": dict(optimizer="sgd", momentum=0.9, nesterov=True, lr=0.4,
                            batch_size=1024, schedule="cosine", warmup_epochs=5,
                            weight_decay=5e-5, epochs=100),
}


def test_every_paper_recipe_is_pinned():
    assert set(PAPERS) == set(RECIPES) - {"fast_cpu"}
    assert len(PAPERS) == 27  # 25 papers' training recipes and 2 for transfer learning


@pytest.mark.parametrize("name", sorted(PAPERS))
def test_recipe_values_are_the_papers(name):
    recipe = get_recipe(name)
    for key, value in PAPERS[name].items():
        got = getattr(recipe, key)
        if isinstance(value, float) or isinstance(got, float):
            assert got == pytest.approx(value, rel=1e-12, abs=0), f"{name}.{key}"
        elif isinstance(value, tuple):
            assert tuple(got) == pytest.approx(value, rel=1e-12), f"{name}.{key}"
        else:
            assert got == value, f"{name}.{key}"


# Learning rates at chosen epochs by hand (10 steps per epoch): lr0 * gamma ** floor(...).
STEPS_PER_EPOCH = 10
LR_AT_EPOCH = {
    "szegedy2014": [(0, 0.01), (7.9, 0.01), (8, 0.01 * 0.96), (16, 0.01 * 0.96**2)],
    # "6 times faster" than Inception: 0.96 every 8/6 epochs, so 0.96^6 after 8 epochs.
    "ioffe2015": [(0, 0.0075), (8, 0.0075 * 0.96**6)],
    "szegedy2016": [(1.9, 0.045), (2, 0.045 * 0.94), (10, 0.045 * 0.94**5)],
    "sandler2018": [(1, 0.045 * 0.98), (10, 0.045 * 0.98**10)],
    "tan2019": [(2.3, 0.256), (2.4, 0.256 * 0.97), (24, 0.256 * 0.97**10)],
    "howard2019": [(2.9, 0.1), (3, 0.1 * 0.99)],
    "huang2017_cifar": [(149.9, 0.1), (150, 0.01), (225, 0.001)],
    "zagoruyko2016_cifar": [(59.9, 0.1), (60, 0.02), (120, 0.004), (160, 0.0008)],
    "hu2018": [(29.9, 0.6), (30, 0.06), (60, 0.006), (90, 0.0006)],
    "huang2016_cifar": [(250, 0.01), (375, 0.001)],
    "xie2017_cifar": [(150, 0.01), (225, 0.001)],
}


@pytest.mark.parametrize("name", sorted(LR_AT_EPOCH))
def test_schedule_magnitudes(name):
    schedule = build_schedule(get_recipe(name), STEPS_PER_EPOCH)
    for epoch, lr in LR_AT_EPOCH[name]:
        step = round(epoch * STEPS_PER_EPOCH)
        assert schedule.lr_at(step) == pytest.approx(lr, rel=1e-9), f"{name} @ epoch {epoch}"


def test_he2016_cifar_steps_and_iandola2016_poly_by_hand():
    # ResNet-20: the warm-up applies only to ResNet-110/1202.
    he = build_schedule(recipe_for_model("resnet20", get_recipe("he2016_cifar")), 351)
    assert [he.lr_at(s) for s in (31_999, 32_000, 47_999, 48_000)] == pytest.approx(
        [0.1, 0.01, 0.01, 0.001])
    # Poly with power 1: lr0 * (1 - step / 170,000); halfway = 0.02.
    squeeze = build_schedule(get_recipe("iandola2016"), 10_000)
    assert squeeze.lr_at(85_000) == pytest.approx(0.02)
    assert math.isclose(squeeze.lr_at(0), 0.04)
