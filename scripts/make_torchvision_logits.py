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


def logits_for(name: str) -> dict:
    ref = REFERENCE[name]
    model = getattr(torchvision.models, name)(**ref["constructor_kwargs"]).eval()
    model.load_state_dict(deterministic_state_dict(model.state_dict()))
    # A ViT takes only the size its position embedding was built for (224 by default).
    size = getattr(model, "image_size", None) or max(64, *ref["min_size"])
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(x)
    return {"input_size": size, "logits": out[:, :10].tolist()}


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    for name in sys.argv[1:]:
        (OUT / f"{name}.json").write_text(json.dumps(logits_for(name)) + "\n")
        print("wrote", name)
