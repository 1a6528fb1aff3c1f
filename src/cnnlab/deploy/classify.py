"""ImageNet classification with published weights, preprocessed as torchvision does.

:func:`eval_preprocess` is torchvision's ``ImageClassification`` preset on a PIL image:
shorter side to ``resize`` (the longer one ``int(resize * long / short)``) with the weights'
interpolation, the central ``crop`` (offsets rounded), [0, 1] scaling, ``(x - mean) / std``.
GoogLeNet's and Inception v3's published weights expect [-1, 1] input; as in torchvision the
model is built with ``transform_input=True`` and maps the normalised input itself.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from cnnlab.deploy.weights import EvalTransforms, imagenet_classes

__all__ = ["eval_preprocess", "predict_pretrained"]

_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
             "nearest": Image.Resampling.NEAREST}


def eval_preprocess(image: Image.Image, t: EvalTransforms) -> torch.Tensor:
    """One RGB image as the (3, crop, crop) float tensor the weights were evaluated on."""
    image = image.convert("RGB")
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = t.resize, int(t.resize * long / short)
    size = (new_short, new_long) if w <= h else (new_long, new_short)
    if size != (w, h):
        image = image.resize(size, _RESAMPLE[t.interpolation])
    w, h = image.size
    if t.crop > w or t.crop > h:
        raise ValueError(f"central crop {t.crop} is larger than the resized image {w}x{h}")
    top, left = int(round((h - t.crop) / 2.0)), int(round((w - t.crop) / 2.0))
    image = image.crop((left, top, left + t.crop, top + t.crop))
    x = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    x = x.view(t.crop, t.crop, 3).permute(2, 0, 1).float().div_(255)
    mean = torch.tensor(t.mean).view(3, 1, 1)
    std = torch.tensor(t.std).view(3, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def predict_pretrained(
    model_name: str, weights: str | os.PathLike, images: Sequence[str | Path], topk: int = 5,
    device: torch.device | str = "cpu",
) -> list[list[tuple[str, float]]]:
    """For each image file, the ``topk`` (ImageNet class name, probability) pairs of
    ``model_name`` with ``weights``, using the weights' own evaluation transforms."""
    from cnnlab.data.folder import decode_image
    from cnnlab.deploy.weights import WeightsError
    from cnnlab.registry import create_model

    if topk < 1:
        raise ValueError(f"--topk must be at least 1, got {topk}")
    model = create_model(model_name, weights=weights).to(device).eval()
    if model.pretrained is not None and model.pretrained.acc1 is None:
        raise WeightsError(f"{model.pretrained.tag} trains only the features (its classifier "
                           "is not ImageNet's); use it as a backbone, e.g. to fine-tune")
    t = model.eval_transforms
    if t is None:
        raise WeightsError(f"{model_name} has no published evaluation transforms; predict a "
                           "trained checkpoint instead (`cnnlab predict CHECKPOINT IMAGE`)")
    classes = imagenet_classes()
    results = []
    for file in images:
        pixels = decode_image(file).permute(1, 2, 0).numpy()  # names the file it cannot read
        x = eval_preprocess(Image.fromarray(pixels), t)
        p = model(x[None].to(device)).softmax(-1)[0]
        if p.numel() != len(classes):
            raise WeightsError(f"{model_name}: {p.numel()} outputs, not ImageNet's "
                               f"{len(classes)} classes")
        values, idx = p.topk(min(topk, p.numel()))
        results.append([(classes[i], float(v)) for v, i in zip(values, idx.tolist(), strict=True)])
    return results
