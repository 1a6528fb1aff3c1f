"""Data-pipeline speed: batched uint8 augmentation vs a per-sample PIL pipeline, and MNIST load.

Claim (issue 5): CIFAR-style training augmentation (pad-4 random crop + horizontal flip +
normalise) on uint8 batches runs at >= 15x the images/s of a per-sample PIL pipeline (PIL crop
and flip per image, to tensor, normalise, collate) and at >= 50,000 images/s on 2 CPU cores;
the full MNIST training and test sets load from their four gz files into tensors in < 1 s.

Evidence: both pipelines run side by side in one process on the same images (CIFAR-10 from
--cifar-root if given, else random uint8 images of the same shape: the work does not depend
on the pixel values). Full run: `python benchmarks/data_speed.py` (writes the `data_speed`
section of docs/benchmarks.md); smoke run: `python benchmarks/data_speed.py --images 2048
--no-write`.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cnnlab.data import load_dataset  # noqa: E402
from cnnlab.data import transforms as T  # noqa: E402
from report import machine, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def cifar_images(n: int, cifar_root: str | None) -> tuple[torch.Tensor, str]:
    if cifar_root:
        images = load_dataset("cifar10", root=cifar_root)["train"].images[:n]
        return images, f"CIFAR-10 training images from {cifar_root}"
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=generator, dtype=torch.uint8)
    return images, "random uint8 3x32x32 images (CIFAR-10's shape)"


def batched_epoch(images: torch.Tensor, batch_size: int) -> int:
    """DeviceLoader's path: shuffle by a permutation, crop by gathering from a padded copy,
    flip by mask, normalise to float32."""
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(len(images), generator=generator)
    seen = 0
    for start in range(0, len(images), batch_size):
        x = images.index_select(0, order[start : start + batch_size])
        x = T.random_crop(x, 32, padding=4, generator=generator)
        x = T.random_flip(x, generator=generator)
        x = T.normalize(x, CIFAR_MEAN, CIFAR_STD)
        seen += len(x)
    return seen


def pil_epoch(images: torch.Tensor, batch_size: int) -> int:
    """The classic per-sample pipeline: PIL pad + random crop + random flip per image, to a
    float tensor, normalise, then collate each batch."""
    rng = random.Random(0)
    hwc = images.permute(0, 2, 3, 1).numpy()
    mean = torch.tensor(CIFAR_MEAN).view(3, 1, 1)
    std = torch.tensor(CIFAR_STD).view(3, 1, 1)
    order = list(range(len(images)))
    rng.shuffle(order)
    seen = 0
    for start in range(0, len(order), batch_size):
        batch = []
        for i in order[start : start + batch_size]:
            image = ImageOps.expand(Image.fromarray(hwc[i]), border=4, fill=0)
            left, top = rng.randint(0, 8), rng.randint(0, 8)
            image = image.crop((left, top, left + 32, top + 32))
            if rng.random() < 0.5:
                image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            x = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float().div(255)
            batch.append((x - mean) / std)
        seen += len(torch.stack(batch))
    return seen


def rates(runs: dict, batch_size: int, repeats: int) -> dict[str, float]:
    """Images/s of each ``name: (epoch_fn, images)``: best of ``repeats`` epochs after a
    warm-up, the pipelines taking turns so that a busy machine slows both alike."""
    best = {name: float("inf") for name in runs}
    for fn, images in runs.values():
        fn(images[: batch_size * 2], batch_size)
    for _ in range(repeats):
        for name, (fn, images) in runs.items():
            start = time.perf_counter()
            seen = fn(images, batch_size)
            best[name] = min(best[name], (time.perf_counter() - start) / seen)
    return {name: 1.0 / per_image for name, per_image in best.items()}


def mnist_load_seconds(root: Path, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        splits = load_dataset("mnist", root=root)
        times.append(time.perf_counter() - start)
        assert len(splits["train"]) + len(splits["test"]) > 0
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=50_000, help="images per epoch")
    parser.add_argument("--pil-images", type=int, default=10_000,
                        help="images for the (slow) PIL pipeline")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: one core each, like the PIL pipeline)")
    parser.add_argument("--cifar-root", default=None)
    parser.add_argument("--mnist-root", default=None,
                        help="folder of the four MNIST gz files (default: ../shared/data/mnist)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    images, source = cifar_images(args.images, args.cifar_root)
    measured = rates(
        {"batched": (batched_epoch, images), "pil": (pil_epoch, images[: args.pil_images])},
        args.batch_size, args.repeats,
    )
    batched, pil = measured["batched"], measured["pil"]
    speedup = batched / pil

    candidates = [ROOT.parent / "shared" / "data" / "mnist",
                  ROOT.parent.parent / "shared" / "data" / "mnist"]
    mnist_root = Path(args.mnist_root) if args.mnist_root else next(
        (c for c in candidates if c.is_dir()), candidates[0])
    full_mnist = (mnist_root / "train-images-idx3-ubyte.gz").is_file()
    if not full_mnist:
        mnist_root = ROOT / "src" / "cnnlab" / "data" / "sample"
    load_times = mnist_load_seconds(mnist_root, args.repeats)
    what = "full MNIST (60,000 + 10,000 digits)" if full_mnist else (
        "the bundled sample (10,000 + 10,000 digits; full MNIST not found)")

    def verdict(ok: bool) -> str:
        return "meets" if ok else "MISSES"

    body = f"""## Data pipeline speed (`benchmarks/data_speed.py`)

Measured on {machine()}, {torch.get_num_threads()} torch threads.
Command: `python benchmarks/data_speed.py --images {args.images} --pil-images {args.pil_images} \
--batch-size {args.batch_size} --repeats {args.repeats}`. Images: {source}.
Best of {args.repeats} epochs each, after a warm-up.

| CIFAR-style augmentation (pad-4 crop + flip + normalise) | images/s |
|---|---:|
| per-sample PIL pipeline (pad, crop, flip per image; to tensor; normalise; collate) | {pil:,.0f} |
| cnnlab batched uint8 (`random_crop` + `random_flip` + `normalize`, batch {args.batch_size}) \
| {batched:,.0f} |
| speed-up | {speedup:.1f}x |

Targets: >= 15x the PIL pipeline ({verdict(speedup >= 15)}), >= 50,000 images/s \
({verdict(batched >= 50_000)}).

| Load {what} from the four gz files into tensors | seconds |
|---|---:|
| best of {args.repeats} | {min(load_times):.3f} |
| median | {statistics.median(load_times):.3f} |

Target: < 1 s ({verdict(min(load_times) < 1.0) if full_mnist else "not measured on full MNIST"}).
"""
    print(body)
    if not args.no_write:
        write_section("data_speed", body)


if __name__ == "__main__":
    main()
