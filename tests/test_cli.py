import json
import re
from pathlib import Path

import cnnlab
from cnnlab.cli import main
from cnnlab.cli.models import markdown_table

ROOT = Path(__file__).resolve().parents[1]


def test_models_json_lists_every_model(capsys):
    assert main(["models", "--json"]) == 0
    infos = json.loads(capsys.readouterr().out)
    assert [i["name"] for i in infos] == cnnlab.list_models()
    assert {i["name"]: i["params"] for i in infos}["alexnet"] == 61_100_840


def test_models_table_shows_exact_counts(capsys):
    assert main(["models", "alex*"]) == 0
    assert "61,100,840" in capsys.readouterr().out


def test_unknown_pattern_is_one_line_exit_2(capsys):
    assert main(["models", "nothing-like-this"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cnnlab: error:") and err.count("\n") == 1


def test_bad_flag_is_one_line_exit_2(capsys):
    assert main(["models", "--bogus"]) == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments: --bogus" in err and err.count("\n") == 1


def test_negative_retries_is_one_line_exit_2(capsys, tmp_path):
    # it used to reach download() and die with an IndexError traceback
    assert main(["data", "download", "mnist", "--root", str(tmp_path), "--retries", "-1"]) == 2
    err = capsys.readouterr().err
    assert "--retries must be an integer >= 0, got '-1'" in err and err.count("\n") == 1


def test_readme_model_table_is_in_sync():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- models:start -->\n(.*?)\n<!-- models:end -->", readme, re.S)
    assert block, "README.md lacks the <!-- models:start/end --> block"
    assert block.group(1) == markdown_table(), (
        "README model table is stale: run `python scripts/sync_readme.py`"
    )
