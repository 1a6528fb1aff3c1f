"""Record torchvision's logits for seeded weights, as test data for state_dict compatibility.

Dev-time only (torchvision is not a dependency): run in an environment where
`import torchvision.models` works:

    python scripts/make_torchvision_logits.py MODEL [MODEL ...]

A torchvision wheel built for another torch also works when unpacked (``pip download
torchvision --no-deps``, then unzip) and named by ``TORCHVISION_DIR=DIR``: its compiled ops
cannot load, so their fake-kernel registrations are skipped; the model builders are pure Python.

For each model it fills torchvision's state_dict with tests/zoo_helpers.deterministic_state_dict,
runs a seeded input in eval mode and writes tests/data/torchvision_logits/MODEL.json. The test
tests/test_torchvision_logits.py loads the same weights into cnnlab's model and compares.
"""

import json
import os
import sys
from pathlib import Path

import torch
import torch.library


def _import_torchvision_models() -> None:
    if os.environ.get("TORCHVISION_DIR"):
        sys.path.insert(0, os.environ["TORCHVISION_DIR"])
        # torchvision.ops registers fake kernels for C++ ops that did not load: skip them.
        torch.library.register_fake = lambda *args, **kwargs: (lambda fn: fn)
    import torchvision.models  # noqa: F401


_import_torchvision_models()
import torchvision.models  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from seeded_weights import deterministic_state_dict  # noqa: E402

OUT = ROOT / "tests" / "data" / "torchvision_logits"
REFERENCE = json.loads((ROOT / "tests" / "data" / "torchvision_reference.json").read_text())

# Where torchvision's declared min_size (the weights' evaluation size) is not what the layers
# need: Swin pads to windows, and at 72x72 (maps 18, 9, 5, 3) every stage has partial windows
# and two have odd sides, so its padding is compared too, at a fraction of 224's cost.
SIZE = {"swin_t": 72, "swin_s": 72, "swin_b": 72}


def small_build(name: str) -> dict:
    """A ViT takes one size, its position embedding's: build it for a 4x4 grid of patches
    (2x2 for /32), the same layers with fewer tokens, so that the test stays cheap."""
    if not name.startswith("vit_"):
        return {}
    patch = int(name.rsplit("_", 1)[1])
    return {"image_size": 4 * patch if patch < 32 else 2 * patch}


def logits_for(name: str) -> dict:
    ref = REFERENCE[name]
    build = small_build(name)
    model = getattr(torchvision.models, name)(**ref["constructor_kwargs"], **build).eval()
    model.load_state_dict(deterministic_state_dict(model.state_dict()))
    size = build.get("image_size") or SIZE.get(name, max(64, *ref["min_size"]))
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(x)
    return {"input_size": size, "build": build, "logits": out[:, :10].tolist()}


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    for name in sys.argv[1:]:
        (OUT / f"{name}.json").write_text(json.dumps(logits_for(name)) + "\n")
        print("wrote", name)
