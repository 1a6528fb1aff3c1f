"""The training loop's numbers by magnitude, each computed here by hand: the label-smoothed
loss, the clipped step's length, one EMA update, GoogLeNet's 0.3-weighted auxiliary losses,
and a NaN, +inf or -inf loss stopping the run before its step is applied."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn as nn

import cnnlab
from cnnlab.data import ImageTensorDataset
from cnnlab.data.loader import DeviceLoader
from cnnlab.train import fit, get_recipe, seed_everything
from cnnlab.train.engine import EMA


class Small(nn.Module):
    """No dropout and no BN, so a forward in train mode is the same function as here."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 5))

    def forward(self, x):
        return self.body(x)


def dataset(n=16, size=8, channels=1, classes=5, seed=3) -> ImageTensorDataset:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, channels, size, size), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, classes, (n,), generator=g)
    return ImageTensorDataset(images, labels, [str(c) for c in range(classes)], name="synthetic")


def plain_sgd(**kw):
    """Plain SGD at a constant rate: a step is exactly -lr * gradient."""
    base = dict(optimizer="sgd", lr=0.5, momentum=0.0, nesterov=False, weight_decay=0.0,
                schedule="constant", epochs=1, batch_size=16, label_smoothing=0.0,
                grad_clip=0.0, ema_decay=0.0, warmup_epochs=0.0, warmup_lr=0.0)
    return dataclasses.replace(get_recipe("fast_cpu"), **(base | kw))


def run(tmp_path, model, recipe, ds, on_step=None):
    seed_everything(0)
    loader = DeviceLoader(ds, recipe.batch_size, shuffle=False)
    return fit(model, recipe, loader, out_dir=tmp_path / "run", model_name="small",
               on_step=on_step, progress=False)


def batch_of(ds, loader_batch: int):
    loader = DeviceLoader(ds, loader_batch, shuffle=False)
    return next(iter(loader))


# --- label smoothing -----------------------------------------------------------------------


def smoothed_cross_entropy(logits: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """Szegedy et al. 2016, Sec. 7: q'(k) = (1 - eps) [k = y] + eps / K; loss = -sum q' log p."""
    k = logits.shape[1]
    log_p = logits.double().log_softmax(1)
    target = torch.full_like(log_p, eps / k)
    target[torch.arange(len(y)), y] += 1 - eps
    return -(target * log_p).sum(1).mean()


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_training_loss_is_the_hand_computed_smoothed_cross_entropy(tmp_path, eps):
    ds = dataset()
    torch.manual_seed(5)
    model = Small()
    x, y = batch_of(ds, 16)
    with torch.no_grad():
        expected = smoothed_cross_entropy(model(x), y, eps).item()
    res = run(tmp_path, model, plain_sgd(label_smoothing=eps), ds)  # one step, all 16 images
    assert res.history[0]["train_loss"] == pytest.approx(expected, rel=1e-6)


def test_szegedy2016_smoothing_magnitude():
    # eps = 0.1 over K = 1000 on uniform logits: the loss is log K whatever the smoothing;
    # on a confident correct prediction it grows by about eps * (mean log-odds).
    assert get_recipe("szegedy2016").label_smoothing == 0.1
    logits = torch.zeros(1, 1000)
    logits[0, 0] = 10.0
    y = torch.tensor([0])
    plain = smoothed_cross_entropy(logits, y, 0.0).item()
    smooth = smoothed_cross_entropy(logits, y, 0.1).item()
    z = 10.0 + math.log(1 + 999 * math.exp(-10.0))  # logsumexp
    assert plain == pytest.approx(z - 10.0)
    assert smooth == pytest.approx(0.9 * (z - 10.0) + 0.1 * (z - 10.0 / 1000))
    loss = nn.CrossEntropyLoss(label_smoothing=0.1)(logits, y).item()
    assert loss == pytest.approx(smooth, rel=1e-5)  # torch in float32


# --- gradient clipping ---------------------------------------------------------------------


def step_length(tmp_path, recipe) -> tuple[float, float]:
    """The global L2 length of the first update and of lr * the unclipped gradient."""
    ds = dataset()
    torch.manual_seed(5)
    model = Small()
    x, y = batch_of(ds, 16)
    before = [p.detach().clone() for p in model.parameters()]
    model.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    grad_norm = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in model.parameters()))
    model.zero_grad(set_to_none=True)
    run(tmp_path, model, recipe, ds)
    delta = torch.sqrt(sum(((p.detach() - b).double() ** 2).sum()
                           for p, b in zip(model.parameters(), before, strict=True)))
    return delta.item(), recipe.lr * grad_norm.item()


@pytest.mark.parametrize("clip", [0.01, 0.05])
def test_a_clipped_step_has_the_recipes_clip_norm(tmp_path, clip):
    delta, unclipped = step_length(tmp_path, plain_sgd(grad_clip=clip))
    assert unclipped > 0.5 * 2 * clip  # the gradient is longer than the clip norm
    assert delta == pytest.approx(0.5 * clip, rel=1e-5)  # lr * clip


def test_an_unclipped_step_is_lr_times_the_gradient(tmp_path):
    delta, unclipped = step_length(tmp_path, plain_sgd(grad_clip=0.0))
    assert delta == pytest.approx(unclipped, rel=1e-5)


def test_szegedy2016_clips_at_2(tmp_path):
    # Sec. 8: "gradient clipping with threshold 2.0"; at lr 1 the step is 2.0 long.
    recipe = get_recipe("szegedy2016")
    assert recipe.grad_clip == 2.0
    big = plain_sgd(lr=1.0, grad_clip=recipe.grad_clip)
    ds = dataset()
    torch.manual_seed(5)
    model = Small()
    with torch.no_grad():
        model.body[-1].weight.mul_(1e3)  # a long gradient
    before = [p.detach().clone() for p in model.parameters()]
    run(tmp_path, model, big, ds)
    delta = math.sqrt(sum(((p.detach() - b).double() ** 2).sum().item()
                          for p, b in zip(model.parameters(), before, strict=True)))
    assert delta == pytest.approx(2.0, rel=1e-5)


# --- EMA -----------------------------------------------------------------------------------


def test_one_ema_update_is_d_old_plus_one_minus_d_new():
    model = nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.fill_(1.0)
        model.bias.fill_(-2.0)
    ema = EMA(model, 0.9)
    with torch.no_grad():
        model.weight.fill_(3.0)
        model.bias.fill_(8.0)
    ema.update(model)
    # 0.9 * 1 + 0.1 * 3 = 1.2; 0.9 * -2 + 0.1 * 8 = -1.0
    torch.testing.assert_close(ema.model.weight, torch.full((2, 3), 1.2))
    torch.testing.assert_close(ema.model.bias, torch.full((2,), -1.0))
    ema.update(model)  # 0.9 * 1.2 + 0.1 * 3 = 1.38
    torch.testing.assert_close(ema.model.weight, torch.full((2, 3), 1.38))


def test_fit_keeps_the_ema_of_its_steps(tmp_path):
    ds = dataset()
    torch.manual_seed(5)
    model = Small()
    old = [p.detach().clone() for p in model.parameters()]
    run(tmp_path, model, plain_sgd(ema_decay=0.75), ds)  # one step
    ckpt = cnnlab.train.load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    names = [n for n, _ in model.named_parameters()]
    for name, o, new in zip(names, old, model.parameters(), strict=True):
        torch.testing.assert_close(ckpt["ema"][name], 0.75 * o + 0.25 * new.detach())


# --- auxiliary heads -----------------------------------------------------------------------


def test_googlenet_aux_losses_weigh_0_3_in_fit(tmp_path):
    # Szegedy et al. 2015, Sec. 5: "their loss is added to the total loss of the network with
    # a discount weight (the losses of the auxiliary classifiers were weighted by 0.3)".
    recipe = dataclasses.replace(get_recipe("szegedy2014"), batch_size=2, epochs=1, lr=1e-9,
                                 ema_decay=0.0)
    torch.manual_seed(0)
    model = cnnlab.create_model("googlenet", aux_logits=True, num_classes=4)
    outputs = []
    model.register_forward_hook(lambda _m, _i, out: outputs.append(out))
    ds = dataset(n=2, size=224, channels=3, classes=4)
    _, y = batch_of(ds, 2)
    res = run(tmp_path, model, recipe, ds)
    (main, aux2, aux1), = outputs
    ce = nn.functional.cross_entropy
    expected = ce(main, y) + 0.3 * ce(aux1, y) + 0.3 * ce(aux2, y)
    assert res.history[0]["train_loss"] == pytest.approx(expected.item(), rel=1e-5)
    assert 0.3 * ce(aux1, y).item() > 1e-3 * expected.item()  # the heads count


# --- non-finite losses ---------------------------------------------------------------------


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_and_plus_minus_inf_losses_stop_the_run(tmp_path, monkeypatch, bad):
    import cnnlab.train.engine as engine

    real = engine.nn.CrossEntropyLoss

    class Poisoned(real):
        """The real loss, then the bad value from the second step on."""

        calls = 0

        def forward(self, logits, y):
            Poisoned.calls += 1
            loss = super().forward(logits, y)
            return loss + bad if Poisoned.calls >= 2 else loss

    monkeypatch.setattr(engine.nn, "CrossEntropyLoss", Poisoned)
    ds = dataset()
    torch.manual_seed(5)
    model = Small()
    seen = {}
    res = run(tmp_path, model, plain_sgd(batch_size=4, epochs=3), ds,
              on_step=lambda s: seen.setdefault(s, [p.detach().clone()
                                                    for p in model.parameters()]))
    assert res.diverged and res.stopped is not None
    assert f"loss became {float(bad)} at epoch 1, step 2" in res.stopped
    assert set(seen) == {1}  # only the first step was taken
    for a, b in zip(seen[1], model.parameters(), strict=True):
        assert torch.equal(a, b)  # the bad step was not applied
