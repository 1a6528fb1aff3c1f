"""Inception-v4 and Inception-ResNet-v2 load the released (TF-slim) weights in timm's layout.

The layouts below are retyped from the releases as timm ports them (timm's inception_v4.py and
inception_resnet_v2.py): each module's key name, its conv's in/out channels and kernel, and the
order in which a filter concatenation joins its branches. A state_dict is built in that layout
with seeded values, converted with ``convert_timm_state_dict`` and loaded with strict=True;
the branch order is then checked by marking every branch's output with its BN bias.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import cnnlab
from cnnlab.models.inception_v4 import convert_timm_state_dict

POOL = "maxpool"  # a parameter-free max-pool branch: its output is the block's input, pooled


def conv(name: str, cin: int, cout: int, kh: int, kw: int | None = None) -> tuple:
    return (name, cin, cout, kh, kh if kw is None else kw)


def timm_inception_v4() -> tuple[list[tuple], dict[str, list[str]]]:
    """timm's inception_v4: (key prefix, cin, cout, kh, kw) per conv-BN, and per filter
    concatenation the branch outputs in the order it concatenates them."""
    convs = [conv("features.0", 3, 32, 3), conv("features.1", 32, 32, 3),
             conv("features.2", 32, 64, 3), conv("features.3.conv", 64, 96, 3)]
    concats = {"features.3": [POOL, "features.3.conv"]}  # Mixed_3a
    convs += [conv("features.4.branch0.0", 160, 64, 1), conv("features.4.branch0.1", 64, 96, 3),
              conv("features.4.branch1.0", 160, 64, 1), conv("features.4.branch1.1", 64, 64, 1, 7),
              conv("features.4.branch1.2", 64, 64, 7, 1),
              conv("features.4.branch1.3", 64, 96, 3)]
    concats["features.4"] = ["features.4.branch0.1", "features.4.branch1.3"]  # Mixed_4a
    convs += [conv("features.5.conv", 192, 192, 3)]
    concats["features.5"] = ["features.5.conv", POOL]  # Mixed_5a
    for i in range(6, 10):  # Inception-A
        p = f"features.{i}"
        convs += [conv(f"{p}.branch0", 384, 96, 1), conv(f"{p}.branch1.0", 384, 64, 1),
                  conv(f"{p}.branch1.1", 64, 96, 3), conv(f"{p}.branch2.0", 384, 64, 1),
                  conv(f"{p}.branch2.1", 64, 96, 3), conv(f"{p}.branch2.2", 96, 96, 3),
                  conv(f"{p}.branch3.1", 384, 96, 1)]
        concats[p] = [f"{p}.branch0", f"{p}.branch1.1", f"{p}.branch2.2", f"{p}.branch3.1"]
    p = "features.10"  # Reduction-A
    convs += [conv(f"{p}.branch0", 384, 384, 3), conv(f"{p}.branch1.0", 384, 192, 1),
              conv(f"{p}.branch1.1", 192, 224, 3), conv(f"{p}.branch1.2", 224, 256, 3)]
    concats[p] = [f"{p}.branch0", f"{p}.branch1.2", POOL]
    for i in range(11, 18):  # Inception-B
        p = f"features.{i}"
        convs += [conv(f"{p}.branch0", 1024, 384, 1), conv(f"{p}.branch1.0", 1024, 192, 1),
                  conv(f"{p}.branch1.1", 192, 224, 1, 7), conv(f"{p}.branch1.2", 224, 256, 7, 1),
                  conv(f"{p}.branch2.0", 1024, 192, 1), conv(f"{p}.branch2.1", 192, 192, 7, 1),
                  conv(f"{p}.branch2.2", 192, 224, 1, 7), conv(f"{p}.branch2.3", 224, 224, 7, 1),
                  conv(f"{p}.branch2.4", 224, 256, 1, 7), conv(f"{p}.branch3.1", 1024, 128, 1)]
        concats[p] = [f"{p}.branch0", f"{p}.branch1.2", f"{p}.branch2.4", f"{p}.branch3.1"]
    p = "features.18"  # Reduction-B
    convs += [conv(f"{p}.branch0.0", 1024, 192, 1), conv(f"{p}.branch0.1", 192, 192, 3),
              conv(f"{p}.branch1.0", 1024, 256, 1), conv(f"{p}.branch1.1", 256, 256, 1, 7),
              conv(f"{p}.branch1.2", 256, 320, 7, 1), conv(f"{p}.branch1.3", 320, 320, 3)]
    concats[p] = [f"{p}.branch0.1", f"{p}.branch1.3", POOL]
    for i in range(19, 22):  # Inception-C
        p = f"features.{i}"
        convs += [conv(f"{p}.branch0", 1536, 256, 1), conv(f"{p}.branch1_0", 1536, 384, 1),
                  conv(f"{p}.branch1_1a", 384, 256, 1, 3), conv(f"{p}.branch1_1b", 384, 256, 3, 1),
                  conv(f"{p}.branch2_0", 1536, 384, 1), conv(f"{p}.branch2_1", 384, 448, 3, 1),
                  conv(f"{p}.branch2_2", 448, 512, 1, 3), conv(f"{p}.branch2_3a", 512, 256, 1, 3),
                  conv(f"{p}.branch2_3b", 512, 256, 3, 1), conv(f"{p}.branch3.1", 1536, 256, 1)]
        concats[p] = [f"{p}.branch0", f"{p}.branch1_1a", f"{p}.branch1_1b", f"{p}.branch2_3a",
                      f"{p}.branch2_3b", f"{p}.branch3.1"]
    return convs, concats


def timm_inception_resnet_v2() -> tuple[list[tuple], list[tuple], dict[str, list[str]]]:
    """timm's inception_resnet_v2: conv-BNs, the residual blocks' biased 1x1 ``conv2d``
    up-projections (prefix, cin, cout), and the non-residual filter concatenations."""
    convs = [conv("conv2d_1a", 3, 32, 3), conv("conv2d_2a", 32, 32, 3),
             conv("conv2d_2b", 32, 64, 3), conv("conv2d_3b", 64, 80, 1),
             conv("conv2d_4a", 80, 192, 3),
             conv("mixed_5b.branch0", 192, 96, 1), conv("mixed_5b.branch1.0", 192, 48, 1),
             conv("mixed_5b.branch1.1", 48, 64, 5), conv("mixed_5b.branch2.0", 192, 64, 1),
             conv("mixed_5b.branch2.1", 64, 96, 3), conv("mixed_5b.branch2.2", 96, 96, 3),
             conv("mixed_5b.branch3.1", 192, 64, 1)]
    ups = []
    concats = {"mixed_5b": ["mixed_5b.branch0", "mixed_5b.branch1.1", "mixed_5b.branch2.2",
                            "mixed_5b.branch3.1"]}
    for i in range(10):  # Block35
        p = f"repeat.{i}"
        convs += [conv(f"{p}.branch0", 320, 32, 1), conv(f"{p}.branch1.0", 320, 32, 1),
                  conv(f"{p}.branch1.1", 32, 32, 3), conv(f"{p}.branch2.0", 320, 32, 1),
                  conv(f"{p}.branch2.1", 32, 48, 3), conv(f"{p}.branch2.2", 48, 64, 3)]
        ups.append((f"{p}.conv2d", 128, 320))
    convs += [conv("mixed_6a.branch0", 320, 384, 3), conv("mixed_6a.branch1.0", 320, 256, 1),
              conv("mixed_6a.branch1.1", 256, 256, 3), conv("mixed_6a.branch1.2", 256, 384, 3)]
    concats["mixed_6a"] = ["mixed_6a.branch0", "mixed_6a.branch1.2", POOL]
    for i in range(20):  # Block17
        p = f"repeat_1.{i}"
        convs += [conv(f"{p}.branch0", 1088, 192, 1), conv(f"{p}.branch1.0", 1088, 128, 1),
                  conv(f"{p}.branch1.1", 128, 160, 1, 7), conv(f"{p}.branch1.2", 160, 192, 7, 1)]
        ups.append((f"{p}.conv2d", 384, 1088))
    convs += [conv("mixed_7a.branch0.0", 1088, 256, 1), conv("mixed_7a.branch0.1", 256, 384, 3),
              conv("mixed_7a.branch1.0", 1088, 256, 1), conv("mixed_7a.branch1.1", 256, 288, 3),
              conv("mixed_7a.branch2.0", 1088, 256, 1), conv("mixed_7a.branch2.1", 256, 288, 3),
              conv("mixed_7a.branch2.2", 288, 320, 3)]
    concats["mixed_7a"] = ["mixed_7a.branch0.1", "mixed_7a.branch1.1", "mixed_7a.branch2.2", POOL]
    for p in [f"repeat_2.{i}" for i in range(9)] + ["block8"]:  # Block8
        convs += [conv(f"{p}.branch0", 2080, 192, 1), conv(f"{p}.branch1.0", 2080, 192, 1),
                  conv(f"{p}.branch1.1", 192, 224, 1, 3), conv(f"{p}.branch1.2", 224, 256, 3, 1)]
        ups.append((f"{p}.conv2d", 448, 2080))
    convs += [conv("conv2d_7b", 2080, 1536, 1)]
    return convs, ups, concats


def timm_state_dict(convs, ups, head: str, gen: torch.Generator,
                    zero_weights: bool = False) -> dict[str, torch.Tensor]:
    """Seeded tensors in timm's layout; every BN bias is a distinct positive marker."""
    sd: dict[str, torch.Tensor] = {}
    for k, (name, cin, cout, kh, kw) in enumerate(convs):
        w = torch.randn(cout, cin, kh, kw, generator=gen) * 0.01
        sd[f"{name}.conv.weight"] = torch.zeros_like(w) if zero_weights else w
        sd[f"{name}.bn.weight"] = torch.ones(cout)
        sd[f"{name}.bn.bias"] = torch.full((cout,), 1.0 + k)
        sd[f"{name}.bn.running_mean"] = torch.zeros(cout)
        sd[f"{name}.bn.running_var"] = torch.ones(cout)
        sd[f"{name}.bn.num_batches_tracked"] = torch.tensor(0)
    for name, cin, cout in ups:
        sd[f"{name}.weight"] = torch.randn(cout, cin, 1, 1, generator=gen) * 0.01
        sd[f"{name}.bias"] = torch.randn(cout, generator=gen) * 0.01
    sd[f"{head}.weight"] = torch.randn(1000, 1536, generator=gen) * 0.01
    sd[f"{head}.bias"] = torch.zeros(1000)
    return sd


def released(model_name: str, zero_weights: bool = False):
    gen = torch.Generator().manual_seed(0)
    if model_name == "inception_v4":
        convs, concats = timm_inception_v4()
        ups, head = [], "last_linear"
    else:
        convs, ups, concats = timm_inception_resnet_v2()
        head = "classif"
    return timm_state_dict(convs, ups, head, gen, zero_weights), concats


@pytest.mark.parametrize("name, tensors", [("inception_v4", 149 * 6 + 2),
                                           ("inception_resnet_v2", 204 * 6 + 40 * 2 + 2)])
def test_timm_state_dict_loads_strictly(name, tensors):
    timm_sd, _ = released(name)
    assert len(timm_sd) == tensors  # conv-BNs x (weight + 5 BN tensors), up-projections, head
    model = cnnlab.create_model(name)
    model.load_state_dict(convert_timm_state_dict(timm_sd, name), strict=True)
    torch.testing.assert_close(model.fc.weight, timm_sd["last_linear.weight" if name ==
                                                        "inception_v4" else "classif.weight"])


def test_the_paper_form_of_inception_v4_does_not_take_the_release():
    timm_sd, _ = released("inception_v4")
    model = cnnlab.create_model("inception_v4", paper=True)
    with pytest.raises(RuntimeError, match="size mismatch"):
        model.load_state_dict(convert_timm_state_dict(timm_sd, "inception_v4"))


def test_unknown_keys_and_models_are_named():
    with pytest.raises(ValueError, match="'stem.weight' is not a key"):
        convert_timm_state_dict({"stem.weight": torch.zeros(1)}, "inception_resnet_v2")
    with pytest.raises(ValueError, match="no timm key mapping for 'resnet50'"):
        convert_timm_state_dict({}, "resnet50")


def to_cnnlab(name: str, timm_module: str) -> str:
    """The cnnlab module that a timm module's keys land in, through the converter itself."""
    key = next(iter(convert_timm_state_dict({f"{timm_module}.x": torch.zeros(1)}, name)))
    return key[: -len(".x")]


@pytest.mark.parametrize("name", ["inception_v4", "inception_resnet_v2"])
def test_filter_concatenations_join_branches_in_the_releases_order(name):
    # Zero conv weights: each conv branch outputs relu(its last BN's bias), a constant marker;
    # a max-pool branch outputs its input pooled. The channels must follow the release's order.
    timm_sd, concats = released(name, zero_weights=True)
    model = cnnlab.create_model(name).eval()
    model.load_state_dict(convert_timm_state_dict(timm_sd, name), strict=True)
    modules = dict(model.named_modules())
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for timm_name in concats:
        ours = to_cnnlab(name, timm_name)
        modules[ours].register_forward_hook(
            lambda _m, inp, out, key=timm_name: seen.__setitem__(key, (inp[0], out)))
    with torch.no_grad():
        model(torch.randn(1, 3, 75, 75, generator=torch.Generator().manual_seed(1)))
    assert set(seen) == set(concats)
    for timm_name, branches in concats.items():
        block_in, out = seen[timm_name]
        parts = []
        for branch in branches:
            if branch == POOL:
                parts.append(nn.functional.max_pool2d(block_in, 3, 2))
            else:
                bias = timm_sd[f"{branch}.bn.bias"]
                parts.append(bias.view(1, -1, 1, 1).expand(1, -1, *out.shape[2:]))
        torch.testing.assert_close(out, torch.cat(parts, 1), msg=timm_name)


def kernels(model: nn.Module, prefix: str) -> list[tuple[int, int]]:
    return [tuple(m.kernel_size) for n, m in model.named_modules()
            if n.startswith(prefix) and isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1)]


def test_paper_flag_orders_the_factorised_convolutions_as_figs_3_5_6():
    release = cnnlab.create_model("inception_v4")
    paper = cnnlab.create_model("inception_v4", paper=True)
    # Fig. 3's stem: 1x1, 7x1, 1x7, 3x3 V; the release: 1x1, 1x7, 7x1, 3x3.
    assert kernels(paper, "features.4.branch1") == [(7, 1), (1, 7), (3, 3)]
    assert kernels(release, "features.4.branch1") == [(1, 7), (7, 1), (3, 3)]
    # Fig. 5's double 7x7 branch: 1x7, 7x1, 1x7, 7x1; the release starts with 7x1.
    for i in range(11, 18):
        assert kernels(paper, f"features.{i}.branch2") == [(1, 7), (7, 1)] * 2
        assert kernels(release, f"features.{i}.branch2") == [(7, 1), (1, 7)] * 2
    # Fig. 6: 1x1 (384) -> 1x3 (448) -> 3x1 (512); the release: 3x1 (448) -> 1x3 (512).
    for i in range(19, 22):
        c_paper, c_release = paper.features[i], release.features[i]
        assert (c_paper.branch2_1.conv.kernel_size, c_paper.branch2_2.conv.kernel_size) == (
            (1, 3), (3, 1))
        assert (c_release.branch2_1.conv.kernel_size, c_release.branch2_2.conv.kernel_size) == (
            (3, 1), (1, 3))
    assert "paper=True" in " ".join(cnnlab.model_info("inception_v4").deviations)
