"""timm's model conventions: num_classes=0, reset/get_classifier, FeatureInfo, any-case names."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import cnnlab
from cnnlab.cli import main

ALL = cnnlab.list_models()

# The width of the pooled features that feed each family's last layer, from the papers' tables:
# ResNet-50's 2048 (Table 1), VGG's 4096-wide FC-7, DenseNet-121's 1024 maps, MobileNetV2's
# 1280 (Table 2), EfficientNet-B0's 1280 (Table 1), LeNet-5's 84-unit F6, CIFAR NiN's third
# block (192 maps), SqueezeNet's fire9 (512), GoogLeNet's 1024 (Table 1), Inception-v3's 2048,
# ResNet-20's 64 (Sec. 4.2), MobileNetV3-Large's 1280-wide hidden layer (Table 1).
POOLED_WIDTH = {
    "resnet50": 2048, "vgg16": 4096, "alexnet": 4096, "densenet121": 1024,
    "mobilenet_v2": 1280, "efficientnet_b0": 1280, "lenet5": 84, "nin_cifar": 192,
    "squeezenet1_0": 512, "googlenet": 1024, "inception_v3": 2048, "resnet20": 64,
    "mobilenet_v3_large": 1280,
}


@pytest.mark.parametrize("name", ALL)
def test_num_classes_0_returns_pooled_features(name):
    info = cnnlab.model_info(name)
    classes = 7  # LeNet-5's RBF output takes at most its ten digit prototypes
    with torch.device("meta"):
        model = cnnlab.create_model(name, num_classes=classes).eval()
    head = model.get_classifier()  # the layer that makes the class scores
    width = getattr(head, "out_features", None) or getattr(head, "out_channels", None)
    assert (width or head.prototypes.shape[0]) == classes, name
    model.reset_classifier(0)  # what create_model(name, num_classes=0) does after building
    assert isinstance(model.get_classifier(), nn.Identity)
    with torch.no_grad():
        out = model(torch.empty(2, *info.input_size, device="meta"))
    # the width the removed last layer took
    assert tuple(out.shape) == (2, model.num_pooled_features()), name
    if name in POOLED_WIDTH:
        assert out.shape[1] == POOLED_WIDTH[name]
    stages = model.feature_info
    assert stages.channels() == [s["channels"] for s in stages], name
    assert stages.reduction() == sorted(stages.reduction()), name


def test_create_model_num_classes_0():
    with torch.device("meta"):
        model = cnnlab.create_model("densenet121", num_classes=0)
    assert isinstance(model.classifier, nn.Identity)
    assert model(torch.empty(1, 3, 224, 224, device="meta")).shape == (1, 1024)


def test_pooled_features_are_the_global_average_of_the_last_map():
    model = cnnlab.create_model("resnet18", num_classes=0).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        pooled = model(x)
        expected = model.forward_features(x).mean(dim=(2, 3))
    assert pooled.shape == (2, 512)
    torch.testing.assert_close(pooled, expected)


def test_reset_and_get_classifier():
    model = cnnlab.create_model("resnet18").eval()
    assert model.get_classifier() is model.fc and model.fc.out_features == 1000
    model.reset_classifier(10)
    head = model.get_classifier()
    assert isinstance(head, nn.Linear) and (head.in_features, head.out_features) == (512, 10)
    x = torch.randn(1, 3, 64, 64)
    assert model(x).shape == (1, 10)
    model.reset_classifier(0)
    assert model(x).shape == (1, 512)
    model.reset_classifier(5)  # the width survives a detour through 0
    assert model(x).shape == (1, 5)
    with torch.device("meta"):
        vgg = cnnlab.create_model("vgg11")
    vgg.reset_classifier(7)
    assert vgg.classifier[6].out_features == 7 and vgg.classifier[0].out_features == 4096
    with pytest.raises(ValueError, match="num_classes must be >= 0"):
        model.reset_classifier(-1)
    with pytest.raises(ValueError, match="num_classes must be >= 0"):
        cnnlab.create_model("resnet18", num_classes=-3)


def test_reset_classifier_of_conv_and_rbf_heads():
    nin = cnnlab.create_model("nin_cifar").eval()
    nin.reset_classifier(100)  # the last mlpconv layer makes one map per class
    assert nin(torch.randn(1, 3, 32, 32)).shape == (1, 100)
    assert nin.feature_info.channels()[-1] == 100
    squeeze = cnnlab.create_model("squeezenet1_1").eval()
    squeeze.reset_classifier(3)
    assert squeeze(torch.randn(1, 3, 64, 64)).shape == (1, 3)
    lenet = cnnlab.create_model("lenet5").eval()
    lenet.reset_classifier(4)  # four of its ten digit prototypes
    assert lenet(torch.randn(1, 1, 32, 32)).shape == (1, 4)
    with pytest.raises(ValueError, match="1..10"):
        lenet.reset_classifier(11)


def test_aux_heads_follow_the_classifier():
    model = cnnlab.create_model("inception_v3", num_classes=0).train()
    with torch.device("meta"):
        out = model.to("meta")(torch.empty(2, 3, 299, 299, device="meta"))
    assert tuple(out.logits.shape) == (2, 2048) and tuple(out.aux_logits.shape) == (2, 768)


def test_feature_info_has_timms_accessors():
    with torch.device("meta"):
        model = cnnlab.create_model("resnet50")
        backbone = cnnlab.create_model("resnet50", features_only=True, out_indices=(1, 2, 3))
    # He et al. 2016, Table 1: conv1 64 maps at /2, conv2_x..conv5_x 256..2048 at /4../32
    assert model.feature_info.channels() == [64, 256, 512, 1024, 2048]
    assert model.feature_info.reduction() == [2, 4, 8, 16, 32]
    assert model.feature_info.channels(1) == 256 and model.feature_info.reduction([0, 4]) == [2, 32]
    assert model.feature_info.module_name() == ["relu", "layer1", "layer2", "layer3", "layer4"]
    assert model.feature_info[0]["channels"] == 64  # still a list of dicts
    assert backbone.feature_info.channels() == [256, 512, 1024]
    assert backbone.feature_info.reduction() == [4, 8, 16]
    maps = backbone(torch.empty(1, 3, 224, 224, device="meta"))
    assert [224 // m.shape[-1] for m in maps] == backbone.feature_info.reduction()


def test_names_are_case_insensitive(capsys):
    with torch.device("meta"):
        assert cnnlab.create_model("VGG16").model_name == "vgg16"
    assert cnnlab.model_info("ResNet50").name == "resnet50"
    assert cnnlab.list_models("VGG1?") == ["vgg11", "vgg13", "vgg16", "vgg19"]
    assert main(["summary", "ResNet20", "--format", "json"]) == 0
    assert '"model": "resnet20"' in capsys.readouterr().out
