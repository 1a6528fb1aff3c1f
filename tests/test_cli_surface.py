"""The command line a new user expects: --version, recipes, --threads, help on every option,
one-line errors that name the flag, the lectures' calc forms, a closed pipe, huge sizes."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest
import torch

import cnnlab
from cnnlab.cli import build_parser, main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def walk(parser, path=()):
    """Every (command path, parser) pair below ``parser``."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from walk(child, (*path, name))


def test_every_option_has_help():
    missing = [(" ".join(path), action.dest) for path, parser in walk(build_parser())
               for action in parser._actions
               if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction))
               and (action.help is None or not action.help.strip())]
    assert missing == []


HEAVY = [("train",), ("eval",), ("predict",), ("demo",), ("summary",), ("rf",), ("erf",),
         ("data", "info")]


def test_heavy_commands_take_threads():
    parsers = dict(walk(build_parser()))
    for path in HEAVY:
        flags = {s for a in parsers[path]._actions for s in a.option_strings}
        assert "--threads" in flags, path


def test_threads_sets_torch_threads(capsys):
    before = torch.get_num_threads()
    try:
        code, out, _ = run(capsys, "calc", "rf", "--layers", "conv3")
        code, out, _ = run(capsys, "rf", "lenet5", "--threads", "1")
        assert code == 0 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    code, _, err = run(capsys, "rf", "lenet5", "--threads", "0")
    assert code == 2 and "rf: --threads must be an integer >= 1, got '0'" in err


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"cnnlab {cnnlab.__version__}"


def test_no_doubled_prefix(capsys):
    code, _, err = run(capsys, "summary", "alexnet", "--input", "3by224")
    assert code == 2 and err.startswith("cnnlab: error: summary: --input must be CxHxW")
    assert err.count("cnnlab") == 1
    code, _, err = run(capsys, "data", "info", "nosuch")
    assert code == 2 and err.startswith("cnnlab: error: data info: argument name: invalid")


def test_recipes_list_and_show(capsys):
    code, out, _ = run(capsys, "recipes")
    assert code == 0
    for name in ("he2016_cifar", "krizhevsky2012", "fast_cpu"):
        assert name in out
    assert "Sec. 4.2" in out  # the paper section is in the list
    code, out, _ = run(capsys, "recipes", "he2016_cifar")
    assert code == 0
    assert "He, Zhang, Ren, Sun 2016, Sec. 4.2" in out
    # the paper's values (Sec. 4.2: lr 0.1, /10 at 32k and 48k, 64k iterations, wd 1e-4)
    for line in ("lr: 0.1", "milestones: 32000, 48000", "max_steps: 64000", "weight_decay: 0.0001",
                 "batch_size: 128", "resnet20"):
        assert line in out, line
    code, _, err = run(capsys, "recipes", "he2017")
    assert code == 2 and "unknown recipe 'he2017'" in err and err.count("\n") == 1


def test_calc_conv_prints_the_lectures_form_beside_pytorchs(capsys):
    # CS231n's examples: N = 7, F = 3: stride 2 -> (7-3)/2 + 1 = 3; stride 3 -> 4/3 + 1 = 2.33
    code, out, _ = run(capsys, "calc", "conv", "--n", "7", "--k", "3", "--s", "2")
    assert code == 0 and "(N - F + 2P)/S + 1 = (7 - 3 + 2*0)/2 + 1 = 3" in out
    code, out, _ = run(capsys, "calc", "conv", "--n", "7", "--k", "3", "--s", "3")
    assert "(7 - 3 + 2*0)/3 + 1 = 4/3 + 1 = 2.33: not an integer" in out
    assert "PyTorch: floor(" in out and "/ 3 + 1 = 2 (" in out
    # 32x32 input, 5x5 filters, pad 2, stride 1 keeps 32
    code, out, _ = run(capsys, "calc", "conv", "--n", "32", "--k", "5", "--p", "2")
    assert "(32 - 5 + 2*2)/1 + 1 = 32" in out


def test_calc_pool(capsys):
    # AlexNet's overlapping pool: 55 -> (55 - 3)/2 + 1 = 27; GoogLeNet's ceil pool 112 -> 56
    code, out, _ = run(capsys, "calc", "pool", "--n", "55", "--k", "3", "--s", "2")
    assert code == 0 and "(55 - 3 + 2*0)/2 + 1 = 27" in out and out.count("= 27") == 2
    code, out, _ = run(capsys, "calc", "pool", "--n", "112", "--k", "3", "--s", "2", "--ceil")
    assert "ceil((112 + 2*0 - 3) / 2) + 1 = 56" in out
    code, out, _ = run(capsys, "calc", "pool", "--n", "224", "--k", "2")  # stride = window
    assert "(224 - 2 + 2*0)/2 + 1 = 112" in out


@pytest.mark.parametrize("layers, size, jump", [
    ("conv3,conv3,conv3", 7, 1),  # three 3x3: 1 + 3*2 (Simonyan & Zisserman Sec. 2.3)
    ("conv5,pool2", 6, 2),  # 5 + (2-1)*1
    ("conv11s4,pool3s2,conv5p2", 51, 8),  # AlexNet to conv2: 11, 11 + 2*4 = 19, 19 + 4*8 = 51
    ("conv3d2", 5, 1),  # dilation 2: a 5-wide window
])
def test_calc_rf(capsys, layers, size, jump):
    code, out, _ = run(capsys, "calc", "rf", "--layers", layers)
    assert code == 0 and f"receptive field: {size}x{size} input pixels, jump {jump}" in out


@pytest.mark.parametrize("argv, words", [
    (["summary", "alexnet", "--input", "3x99999999999999999999x2"], "between 1 and"),
    (["summary", "alexnet", "--batch", "1e20"], "--batch must be an integer in [1, "),
    (["summary", "alexnet", "--batch", "99999999999999999999"], "--batch must be an integer"),
    (["summary", "alexnet", "--input", "3x224"], "two numbers are ambiguous"),
    (["rf", "alexnet", "--input", "224x160"], "3x224x160"),
    (["erf", "alexnet", "--layer", "features.5", "--input", "3x100000x100000"],
     "try a smaller --input"),
    (["calc", "rf", "--layers", "conv3,fc"], "got 'fc'"),
    (["calc", "pool", "--n", "4", "--k", "3", "--p", "2"], "padding 2 must be"),
])
def test_huge_or_ambiguous_sizes_are_one_line(capsys, argv, words):
    code, out, err = run(capsys, *argv)
    assert code == 2 and err.count("\n") == 1 and err.startswith("cnnlab: error:"), err
    assert words in err and out == ""


def test_broken_pipe_exits_0_quietly():
    # `cnnlab models | head -1`: the reader is gone before anything is written
    proc = subprocess.Popen([sys.executable, "-m", "cnnlab", "models"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 0 and err == b""
