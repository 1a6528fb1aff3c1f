"""Transfer learning: a pretrained backbone with a new head for the dataset's classes.

The lectures' point: the final features of an ImageNet network generalise to other tasks, so
pretrained models can be repurposed. ``cnnlab train MODEL --weights NAME`` builds the model
with those weights (:func:`cnnlab.deploy.weights.create_pretrained`), replaces the layers
that produce ImageNet's 1000 logits by fresh ones for the dataset's classes, and keeps the
weights' own evaluation transforms and normalisation. With ``freeze="backbone"`` only the new
head trains and the backbone's BatchNorm layers stay in eval mode (their running statistics
are part of what was learned on ImageNet); ``linear_probe`` also turns the backbone's dropout
off: a linear classifier on frozen features.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch.nn as nn

from cnnlab.deploy.weights import EvalTransforms

__all__ = ["Finetune", "freeze_backbone"]

FREEZE = ("none", "backbone")


@dataclass
class Finetune:
    """How a run fine-tunes: which weights, what is frozen, and (once built) the head."""

    weights: str
    freeze: str | None = None  # "none" | "backbone"; None: "backbone" for a linear probe
    linear_probe: bool = False
    transforms: EvalTransforms | None = None
    head: list[str] = field(default_factory=list)
    model_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.freeze is None:
            self.freeze = "backbone" if self.linear_probe else "none"
        if self.freeze not in FREEZE:
            raise ValueError(f"--freeze must be one of {', '.join(FREEZE)}, got {self.freeze!r}")
        if self.linear_probe and self.freeze != "backbone":
            raise ValueError("--linear-probe trains the head alone: it freezes the backbone")

    @property
    def recipe(self) -> str:
        """The default recipe: head alone on frozen features, or the whole network."""
        return "linear_probe" if self.linear_probe else "finetune"

    def build(self, model_name: str, num_classes: int) -> nn.Module:
        """The pretrained model with a new ``num_classes`` head, frozen as asked."""
        from cnnlab.registry import create_model

        model = create_model(model_name, weights=self.weights, num_classes=num_classes)
        self.transforms = self.transforms or model.eval_transforms
        if not hasattr(model, "head_names"):  # the weights' classes are the dataset's: the
            # head is kept (not replaced) but still is what trains fastest, or alone
            from cnnlab.deploy.weights import head_layers

            model.head_names = head_layers(model, num_classes)
        self.head = list(model.head_names)
        self.model_kwargs = dict(getattr(model, "build_kwargs", {}))
        self._freeze(model)
        return model

    def rebuild(self, model_name: str, num_classes: int) -> nn.Module:
        """The same architecture without fetching the weights (a resumed run loads its own)."""
        from cnnlab.registry import create_model

        model = create_model(model_name, num_classes=num_classes, **self.model_kwargs)
        model.head_names = list(self.head)
        self._freeze(model)
        return model

    def _freeze(self, model: nn.Module) -> None:
        if self.freeze == "backbone":
            freeze_backbone(model, self.head, dropout_off=self.linear_probe)

    def describe(self) -> str:
        what = ("linear probe" if self.linear_probe else
                "backbone frozen" if self.freeze == "backbone" else "all layers train")
        t = self.transforms
        sizing = f"; eval {t.resize}->{t.crop} {t.interpolation}" if t else ""
        return f"fine-tuning from weights {self.weights}: new head {', '.join(self.head)}, " \
               f"{what}{sizing}"

    def to_run(self) -> dict[str, Any]:
        t = self.transforms
        return {
            "weights": self.weights, "freeze": self.freeze, "linear_probe": self.linear_probe,
            "head": self.head, "model_kwargs": self.model_kwargs,
            "transforms": None if t is None else {
                "resize": t.resize, "crop": t.crop, "interpolation": t.interpolation,
                "mean": list(t.mean), "std": list(t.std)},
        }

    @classmethod
    def from_run(cls, d: dict[str, Any]) -> Finetune:
        t = d.get("transforms")
        return cls(
            weights=d["weights"], freeze=d["freeze"], linear_probe=d["linear_probe"],
            head=list(d["head"]), model_kwargs=dict(d.get("model_kwargs") or {}),
            transforms=None if t is None else EvalTransforms(
                t["resize"], t["crop"], t["interpolation"], tuple(t["mean"]), tuple(t["std"])),
        )


def _stay_in_eval(module: nn.Module, _args: Any) -> None:
    # model.train() switches every module back each epoch; this runs before each forward.
    module.train(False)


def freeze_backbone(model: nn.Module, head: list[str], *, dropout_off: bool = False) -> None:
    """Stop gradients to every parameter outside the ``head`` modules and keep the
    backbone's BatchNorm (and, with ``dropout_off``, dropout) layers in eval mode."""
    if not head:
        raise ValueError("freeze_backbone needs the names of the head modules")
    inside = {id(m) for name in head for m in model.get_submodule(name).modules()}
    for module in model.modules():
        if id(module) in inside:
            continue
        for p in module.parameters(recurse=False):
            p.requires_grad_(False)
        frozen_kinds: tuple[type, ...] = (nn.modules.batchnorm._BatchNorm,)
        if dropout_off:
            frozen_kinds += (nn.modules.dropout._DropoutNd,)
        if isinstance(module, frozen_kinds):
            module.register_forward_pre_hook(_stay_in_eval)
