"""Write cnnlab's table of torchvision's published weight sets (src/cnnlab/deploy/data/).

Reads ../shared/reference/torchvision_models.json (torchvision's own ``Weights`` metadata:
URL, SHA-256 prefix, file size, evaluation transforms, params, GFLOPs, ImageNet acc@1/acc@5)
and ../shared/reference/imagenet_classes.json, keeps the models cnnlab registers as
torchvision-compatible, and writes the compact package-data files the library reads.

    python scripts/make_weights_table.py [REFERENCE_DIR]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cnnlab

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src" / "cnnlab" / "deploy" / "data"

# torchvision builds these with extra constructor arguments when it loads published weights:
# the ported Caffe/TF weights expect [-1, 1] input (``transform_input``) and the files hold
# the auxiliary heads (googlenet.py and inception.py in torchvision.models).
BUILD = {
    "googlenet": {"transform_input": True, "aux_logits": True, "init_weights": False},
    "inception_v3": {"transform_input": True, "aux_logits": True, "init_weights": False},
}
SET_FIELDS = ("url", "sha256_prefix", "file_size_mb", "num_params", "gflops", "acc1", "acc5",
              "recipe", "min_size")


def weight_set(meta: dict) -> dict:
    t = meta["transforms"]
    if t["class"] != "ImageClassification" or len(t["crop_size"]) != 1:
        raise ValueError(f"unexpected transforms {t}")
    entry = {key: meta[key] for key in SET_FIELDS}
    for key in ("acc1", "acc5"):  # NaN for a features-only set (vgg16's IMAGENET1K_FEATURES)
        if entry[key] != entry[key]:
            entry[key] = None
    entry["transforms"] = {
        "resize": t["resize_size"][0], "crop": t["crop_size"][0],
        "interpolation": t["interpolation"].lower(), "mean": t["mean"], "std": t["std"],
    }
    return entry


def main(reference: Path) -> None:
    models = json.loads((reference / "torchvision_models.json").read_text())
    table = {}
    for name in cnnlab.list_models():
        if not cnnlab.model_info(name).torchvision:
            continue
        ref = models[name]
        enum, default = ref["weights"].split(".")
        table[name] = {
            "enum": enum,
            "default": default,
            "build": BUILD.get(name, {}),
            "sets": {k: weight_set(v) for k, v in ref["all_weights"].items()},
        }
    OUT.mkdir(parents=True, exist_ok=True)
    doc = {"source": "torchvision 0.28 Weights metadata, via shared/reference/"
                     "torchvision_models.json (scripts/make_weights_table.py)",
           "models": table}
    # One model per line: compact, and a diff shows which model changed.
    lines = [f"  {json.dumps(k)}: {json.dumps(v, separators=(',', ':'))}" for k, v in
             table.items()]
    text = ('{\n  "source": ' + json.dumps(doc["source"]) + ',\n  "models": {\n'
            + ",\n".join("  " + line for line in lines) + "\n  }\n}\n")
    assert json.loads(text) == doc
    (OUT / "torchvision_weights.json").write_text(text)
    classes = json.loads((reference / "imagenet_classes.json").read_text())
    assert len(classes["categories"]) == 1000
    (OUT / "imagenet_classes.json").write_text(json.dumps(
        {"source": classes["source"], "categories": classes["categories"]}, indent=0) + "\n")
    print(f"{len(table)} models, {sum(len(m['sets']) for m in table.values())} weight sets "
          f"-> {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "reference")
