"""`cnnlab models`: never a cut name or number, a GMACs figure for every model, sorts, filters."""

from __future__ import annotations

import json
import re

import pytest

import cnnlab
from cnnlab.analysis import zoo
from cnnlab.cli import main
from cnnlab.cli.models import terminal_table
from cnnlab.registry import natural_key


def models_out(capsys, *argv):
    assert main(["models", *argv]) == 0
    return capsys.readouterr().out


def model_lines(out):
    """The lines of the plain listing that start with a model name."""
    names = set(cnnlab.list_models())
    return [line for line in out.splitlines() if line.split() and line.split()[0] in names]


def test_natural_sort_puts_resnet18_before_resnet101():
    names = cnnlab.list_models("resnet*")
    assert names.index("resnet18") < names.index("resnet34") < names.index("resnet101")
    assert names.index("resnet20") < names.index("resnet110") < names.index("resnet1202")
    assert names == sorted(names, key=natural_key)
    assert natural_key("densenet40_12") < natural_key("densenet121")


def test_piped_listing_is_plain_and_grep_finds_every_model(capsys):
    out = models_out(capsys)
    assert "│" not in out and "…" not in out  # capsys is not a terminal: plain columns
    lines = model_lines(out)
    assert [line.split()[0] for line in lines] == cnnlab.list_models()
    for name in cnnlab.list_models():  # what `cnnlab models | grep -w NAME` does
        assert len([ln for ln in out.splitlines() if re.search(rf"(?<![\w]){name}(?![\w])", ln)
                    ]) >= 1, name
    alexnet = next(ln for ln in lines if ln.split()[0] == "alexnet").split()
    # AlexNet (torchvision's form): 61,100,840 parameters, 0.714 GMACs at 224, ImageNet, 56.52
    assert alexnet[:8] == ["alexnet", "alexnet", "2012", "61,100,840", "0.714", "3x224x224",
                           "imagenet", "56.52"]


def test_80_column_terminal_cuts_nothing():
    text = terminal_table(zoo.zoo_rows(), width=80)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80 and "…" not in text
    cells = [[c.strip() for c in re.split(r"[│┃]", line)[1:-1]] for line in lines]
    cells = [c for c in cells if c]
    names = [c[0] for c in cells[1:]]  # after the header row
    assert names == cnnlab.list_models()  # every name whole, one row each
    header = cells[0]
    assert "params" in header and "top-1 (%)" in header and "dataset" in header
    params = {c[0]: c[header.index("params")] for c in cells[1:]}
    assert params["vgg16"] == "138,357,544" and params["lenet5"] == "60,000"


def test_every_model_has_gmacs_computed_where_none_is_declared():
    rows = {r.name: r for r in zoo.zoo_rows()}
    assert set(rows) == set(cnnlab.list_models())
    assert all(r.macs and r.macs > 0 for r in rows.values())
    # ResNet-20 (He et al. 2016, Sec. 4.2) on 32x32, by hand: conv1 32*32*16*27 = 442,368;
    # stage 1: 6 convs 32*32*16*144 = 2,359,296 each; stage 2: 16->32 at 16x16 (1,179,648)
    # then 5 x 16*16*32*288; stage 3 the same at 8x8; fc 64*10 = 640: 40,551,040 ("40.6M").
    assert rows["resnet20"].macs == 40_551_040 and rows["resnet20"].macs_computed
    assert rows["alexnet"].macs == cnnlab.model_info("alexnet").macs
    assert not rows["alexnet"].macs_computed
    assert rows["resnet20"].dataset == "cifar10" and rows["alexnet"].dataset == "imagenet"


def test_computed_gmacs_are_marked_in_every_format(capsys):
    out = models_out(capsys, "resnet20")
    line = model_lines(out)[0].split()
    assert line[4] == "0.041*"  # 40,551,040 MACs, marked: the paper declares none
    assert "* computed" in out
    assert "| resnet20 | resnet | 2016 | 269,722 | 0.041* | 3x32x32 | cifar10 | 91.25 |" in (
        models_out(capsys, "resnet20", "--markdown"))


def test_sort_and_filters(capsys):
    by_params = [ln.split()[0] for ln in model_lines(models_out(capsys, "--sort", "params"))]
    infos = {n: cnnlab.model_info(n) for n in by_params}
    counts = [infos[n].params for n in by_params]
    assert counts == sorted(counts) and by_params[0] == "lenet5"  # LeNet-5: 60,000
    by_year = [ln.split()[0] for ln in model_lines(models_out(capsys, "--sort", "year"))]
    assert by_year[0] == "lenet5"  # 1998
    by_top1 = [ln.split()[0] for ln in model_lines(models_out(capsys, "--sort", "top1"))]
    top1 = [infos[n].top1 for n in by_top1 if infos[n].top1 is not None]
    assert top1 == sorted(top1, reverse=True) and by_top1[0] == "lenet5"  # 99.05 on MNIST
    assert infos[by_top1[-1]].top1 is None  # no published figure: last
    by_macs = [ln.split()[0] for ln in model_lines(models_out(capsys, "--sort", "macs"))]
    macs = {r.name: r.macs for r in zoo.zoo_rows()}
    assert [macs[n] for n in by_macs] == sorted(macs.values())
    cifar = [ln.split()[0] for ln in model_lines(models_out(capsys, "--dataset", "cifar10"))]
    assert "resnet20" in cifar and all(infos[n].dataset == "cifar10" for n in cifar)
    vgg = [ln.split()[0] for ln in model_lines(models_out(capsys, "--family", "vgg"))]
    assert vgg and all(infos[n].family == "vgg" for n in vgg) and "vgg16" in vgg


def test_unknown_family_names_the_known_ones(capsys):
    assert main(["models", "--family", "transformer"]) == 2
    err = capsys.readouterr().err
    assert "family 'transformer'" in err and "resnet" in err and err.count("\n") == 1


def test_json_carries_the_computed_macs(capsys):
    infos = json.loads(models_out(capsys, "resnet20", "--json"))
    assert infos[0]["macs"] is None  # the paper declares none
    assert infos[0]["computed_macs"] == 40_551_040


def test_macs_cache_covers_exactly_the_registry():
    # tests/test_analysis_summary.py checks each cached value against the analyser
    assert sorted(zoo.cached_macs()) == sorted(cnnlab.list_models()), (
        "stale cache: run `python scripts/sync_readme.py`")


@pytest.mark.parametrize("name", ["VGG16", "ResNet18"])
def test_names_are_case_insensitive_in_the_cli(capsys, name):
    assert main(["models", name]) == 0
    assert name.lower() in capsys.readouterr().out
