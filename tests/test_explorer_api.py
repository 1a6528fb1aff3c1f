"""The explorer's JSON API in-process: every endpoint and every error, against hand arithmetic;
the safety promises (no path outside the runs folder, no write endpoint, JSON errors);
and a bounded load test on 127.0.0.1 (200 concurrent requests for a heavy model)."""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cnnlab import list_models
from cnnlab.analysis.lectures import SECTIONS
from cnnlab.explorer import api, make_server
from cnnlab.explorer import server as server_module

from explorer_runs import HISTORY, make_runs

ROOT = Path(__file__).resolve().parents[1]


class Client:
    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def get(self, path: str, method: str = "GET") -> tuple[int, dict | str, str]:
        req = urllib.request.Request(self.url + path, method=method)
        try:
            with urllib.request.urlopen(req, timeout=120) as res:
                status, body, kind = res.status, res.read(), res.headers["Content-Type"]
        except urllib.error.HTTPError as err:
            status, body, kind = err.code, err.read(), err.headers["Content-Type"]
        if kind.startswith("application/json"):
            return status, json.loads(body) if body else {}, kind
        return status, body.decode(), kind

    def ok(self, path: str) -> dict:
        status, body, _ = self.get(path)
        assert status == 200, body
        return body

    def error(self, path: str, status: int, method: str = "GET") -> str:
        got, body, kind = self.get(path, method)
        assert got == status, body
        assert kind.startswith("application/json")
        assert set(body) == {"error"} and "Traceback" not in body["error"]
        return body["error"]


def _serve(runs=None):
    srv = make_server(port=0, runs=runs, quiet=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    return srv, thread


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory) -> Path:
    return make_runs(tmp_path_factory.mktemp("explorer"))


@pytest.fixture(scope="module")
def client(runs_root):
    srv, thread = _serve(runs_root)
    yield Client(srv.url)
    srv.shutdown()
    srv.server_close()
    thread.join(5)


# -- hand arithmetic ------------------------------------------------------------------
VGG16_CONVS = [(224, 3, 64), (224, 64, 64), (112, 64, 128), (112, 128, 128), (56, 128, 256),
               (56, 256, 256), (56, 256, 256), (28, 256, 512), (28, 512, 512), (28, 512, 512),
               (14, 512, 512), (14, 512, 512), (14, 512, 512)]  # (side, C_in, C_out), 3x3 'same'
VGG16_FC = [(25088, 4096), (4096, 4096), (4096, 1000)]


def vgg16_by_hand(side: int = 224) -> tuple[int, int]:
    """(params, MACs) of VGG16 at side x side (the classifier sees the 7x7 adaptive pool)."""
    params = sum(9 * a * b + b for _, a, b in VGG16_CONVS) + sum(a * b + b for a, b in VGG16_FC)
    scale = side / 224
    macs = sum(round(s * scale) ** 2 * b * 9 * a for s, a, b in VGG16_CONVS)
    return params, macs + sum(a * b for a, b in VGG16_FC)


# -- the models table -----------------------------------------------------------------
def test_models_table_lists_the_registry(client):
    body = client.ok("/api/models")
    names = [m["name"] for m in body["models"]]
    assert names == list_models() and len(names) > 80
    vgg = next(m for m in body["models"] if m["name"] == "vgg16")
    params, _ = vgg16_by_hand()
    assert vgg["params"] == params == 138_357_544
    assert (vgg["family"], vgg["year"], vgg["input_size"], vgg["dataset"]) == \
        ("vgg", 2015, [3, 224, 224], "imagenet")
    assert vgg["top1"] == pytest.approx(71.59, abs=0.01) and vgg["recipe"] == "simonyan2014"
    assert vgg["gmacs"] == pytest.approx(15.47, abs=0.01)


# -- one model ------------------------------------------------------------------------
def test_vgg16_at_its_input_matches_hand_arithmetic(client):
    body = client.ok("/api/models/vgg16?input=3x224x224")
    params, macs = vgg16_by_hand()
    t = body["totals"]
    assert (t["params"], t["macs"], t["flops"]) == (params, macs, 2 * macs)
    assert macs == pytest.approx(15.47e9, rel=1e-3)
    # the slide's rows 15,237,608 values + the 7x7x512 adaptive pool (docs/lecture-numbers.md)
    assert t["activation_values"] == 15_237_608 + 7 * 7 * 512
    assert t["activation_bytes"] == 4 * t["activation_values"]
    assert body["input"] == [3, 224, 224] and body["info"]["name"] == "vgg16"
    conv1 = next(r for r in body["rows"] if r["name"] == "features.0")
    assert conv1["output_shape"] == [1, 64, 224, 224] and conv1["params"] == 1_792
    assert conv1["macs"] == 224 * 224 * 64 * 27
    assert conv1["receptive_field"] == {"size": 3, "jump": 1, "start": 0, "global": False}
    pool5 = next(r for r in body["rows"] if r["name"] == "features.30")
    # r += (k - 1) * j, j *= s through 13 3x3 convs (s 1) and 5 2x2 pools (s 2)
    r, j = 1, 1
    for k, s in [(3, 1)] * 2 + [(2, 2)] + [(3, 1)] * 2 + [(2, 2)] + ([(3, 1)] * 3 + [(2, 2)]) * 3:
        r, j = r + (k - 1) * j, j * s
    assert pool5["receptive_field"]["size"] == r == 212
    assert pool5["receptive_field"]["jump"] == 32


def test_input_size_is_recomputed(client):
    small = client.ok("/api/models/vgg16?input=3x64x64")
    params, macs = vgg16_by_hand(64)
    assert (small["totals"]["params"], small["totals"]["macs"]) == (params, macs)
    # square shorthand and HxW give the same analysis
    assert client.ok("/api/models/vgg16?input=64")["totals"] == small["totals"]
    assert client.ok("/api/models/vgg16?input=64x64")["totals"] == small["totals"]
    # no input: the model's own
    assert client.ok("/api/models/resnet20")["input"] == [3, 32, 32]


def test_rows_name_their_inputs_so_branches_show(client):
    res = {r["name"]: r for r in client.ok("/api/models/resnet18?input=3x64x64")["rows"]}
    # the residual add reads the block's last BN and the block input (maxpool's output)
    assert res["layer1.0.add"]["inputs"] == ["layer1.0.bn2", "maxpool"]
    assert res["layer1.0.add"]["module"] == "layer1.0"
    assert res["layer2.0.add"]["inputs"] == ["layer2.0.bn2", "layer2.0.downsample.1"]
    goog = {r["name"]: r for r in client.ok("/api/models/googlenet?input=3x96x96")["rows"]}
    assert sorted(goog["inception3a.cat"]["inputs"]) == [
        "inception3a.branch1.relu", "inception3a.branch2.1.relu", "inception3a.branch3.1.relu",
        "inception3a.branch4.1.relu"]
    dense = {r["name"]: r for r in client.ok("/api/models/densenet121?input=3x64x64")["rows"]}
    block = "features.denseblock1"
    assert dense[f"{block}.denselayer3.cat"]["inputs"] == [
        "features.pool0", f"{block}.denselayer1.conv2", f"{block}.denselayer2.conv2"]
    se = {r["name"]: r for r in client.ok("/api/models/se_resnet18?input=3x64x64")["rows"]}
    assert se["layer1.0.se.mul"]["inputs"] == ["layer1.0.bn2", "layer1.0.se.scale_activation"]


def test_stages_by_hand(client):
    body = client.ok("/api/models/resnet18")
    stages = {s["name"]: s for s in body["stages"]}
    assert list(stages) == ["relu", "layer1", "layer2", "layer3", "layer4", "head"]
    # layer1: two BasicBlocks of 64 channels = 4 3x3 convs + 4 BNs, at 56x56
    assert stages["layer1"]["params"] == 4 * 9 * 64 * 64 + 4 * 2 * 64
    assert stages["layer1"]["macs"] == 4 * 56 * 56 * 64 * 9 * 64
    assert stages["layer1"]["output_shape"] == [1, 64, 56, 56]
    assert stages["head"]["params"] == 512 * 1000 + 1000  # the fc layer
    assert stages["relu"]["params"] == 7 * 7 * 3 * 64 + 2 * 64  # conv1 + bn1
    assert sum(s["params"] for s in body["stages"]) == body["totals"]["params"] == 11_689_512
    assert body["modules"][0] == {"name": "layer1", "type": "Sequential"}
    assert {"name": "layer1.0", "type": "BasicBlock"} in body["modules"]


@pytest.mark.parametrize("path, status, message", [
    ("/api/models/nosuch", 404, "unknown model 'nosuch'"),
    ("/api/models/resnet5", 404, "closest: resnet56, resnet50"),
    ("/api/models/..%2F..%2Fetc", 404, "names are letters, digits and underscores"),
    ("/api/models/vgg16?input=abc", 400, "is not a size"),
    ("/api/models/vgg16?input=3x224", 400, "input 3x224 is too small"),  # read as HxW
    ("/api/models/vgg16?input=1x224x224", 400, "takes 3-channel images, not 1"),
    ("/api/models/vgg16?input=3x0x224", 400, "between 1 and 4096"),
    ("/api/models/vgg16?input=3x5000x5000", 400, "between 1 and 4096"),
    ("/api/models/vgg16?input=3x2048x2048", 400, "more than the explorer's limit of "
                                                 "1,000,000,000"),
    ("/api/models/vgg16?input=3x16x16", 400, "too small"),
    ("/api/models/lenet5?input=1x64x64", 400, "lenet5"),
    ("/api/nothing", 404, "no API route"),
    ("/etc/passwd", 404, "no page"),
    ("/static/../server.py", 404, "no file"),  # a table lookup: no path is opened
    ("/static/..%2Fserver.py", 404, "no file"),
    ("/static/nosuch.js", 404, "no file"),
])
def test_errors_are_json_messages(client, path, status, message):
    assert message in client.error(path, status)


def test_the_activation_limit_is_the_stated_one(client):
    # VGG16's activations grow with the pixels: 15.26M at 224 -> 1.2e9 at 2048, 0.97e9 at 1792
    assert api.MAX_ACTIVATION_VALUES == 1_000_000_000
    body = client.ok("/api/models/vgg16?input=3x1792x1792")
    assert body["totals"]["activation_values"] < 1_000_000_000
    assert body["limits"]["max_activation_values"] == 1_000_000_000


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_no_write_endpoints(client, method):
    assert "read-only" in client.error("/api/models", 405, method)


def test_a_malformed_request_gets_json_not_html(client):
    host, port = client.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"GET /a b HTTP/1.0\r\n\r\n")
        answer = b""
        while chunk := s.recv(4096):  # the server closes the connection after answering
            answer += chunk
        answer = answer.decode()
    assert answer.startswith("HTTP/1.0 400") and '{"error":' in answer


# -- the page -------------------------------------------------------------------------
def test_the_page_and_its_modules_are_served(client):
    status, html, kind = client.get("/")
    assert status == 200 and kind.startswith("text/html")
    assert '<script type="module" src="/static/app.js">' in html
    # every module the page imports is served, and none is fetched from elsewhere (no CDN)
    seen, todo = set(), ["app.js"]
    while todo:
        name = todo.pop()
        status, js, kind = client.get(f"/static/{name}")
        assert status == 200 and kind.startswith("text/javascript"), name
        seen.add(name)
        base = name.rpartition("/")[0]
        for target in re.findall(r"from '(\.{1,2}/[^']+)'", js):
            path = Path(base, target).as_posix()
            resolved = str(Path("/", path).resolve()).lstrip("/")
            if resolved not in seen:
                todo.append(resolved)
        assert not re.search(r"""(import|from)\s*\(?\s*['"]https?:""", js), name
    assert {"app.js", "util.js", "charts.js", "diagram.js", "views/model.js"} <= seen
    assert client.get("/static/style.css")[2].startswith("text/css")


# -- runs -----------------------------------------------------------------------------
def test_runs_listing_reads_only_real_runs_inside_the_folder(client):
    body = client.ok("/api/runs")
    assert body["root"] is True
    ids = [r["id"] for r in body["runs"]]
    assert ids == ["resnet20-cifar10", "weights-only"]  # not "notes" (no log), not "escape"
    full = body["runs"][0]
    assert (full["model"], full["data"], full["recipe"], full["epochs"]) == \
        ("resnet20", "cifar10", "he2016_cifar", 3)
    assert full["final"]["test_top1"] == 73.75 and full["best"]["test_top1"] == 73.75
    assert full["best"]["val_top1"] == 74.0


def test_one_run(client):
    run = client.ok("/api/runs/resnet20-cifar10")
    assert [r["epoch"] for r in run["history"]] == [1, 2, 3]
    assert [r["test_top1"] for r in run["history"]] == [h["test_top1"] for h in HISTORY]
    assert run["config"]["name"] == "he2016_cifar" and run["config"]["lr"] == 0.1
    assert run["run"]["classes"] == 10 and run["run"]["image_size"] == [3, 32, 32]
    assert {"metrics.jsonl", "checkpoint.pt", "model.safetensors"} <= set(run["files"])
    weights = client.ok("/api/runs/weights-only")  # no checkpoint: the safetensors header
    assert (weights["model"], weights["recipe"], weights["config"]) == \
        ("resnet20", "he2016_cifar", None)


@pytest.mark.parametrize("run_id", ["escape", "notes", "nosuch", "..", ".", "..%2Foutside",
                                    "%2Fetc", "a%00b"])
def test_runs_outside_the_folder_are_not_found(client, run_id):
    client.error(f"/api/runs/{run_id}", 404)


def test_a_torn_log_and_a_nan_are_reported_not_fatal(tmp_path):
    from explorer_runs import write_run

    runs = tmp_path / "runs"
    folder = write_run(runs / "torn")
    with open(folder / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 4, "train_loss": NaN, "train_top1": 10.0}\n{"epoch": 5, "trai')
    srv, thread = _serve(runs)
    try:
        run = Client(srv.url).ok("/api/runs/torn")
    finally:
        srv.shutdown()
        srv.server_close()
    assert [r["epoch"] for r in run["history"]] == [1, 2, 3, 4]
    assert run["history"][-1]["train_loss"] is None  # NaN is not JSON
    assert run["error"] == "1 unreadable line(s) in metrics.jsonl skipped"


def test_files_linked_from_outside_are_not_read(tmp_path):
    from explorer_runs import write_run

    outside = write_run(tmp_path / "outside")
    runs = tmp_path / "runs"
    linked_log = runs / "linked-log"
    linked_log.mkdir(parents=True)
    (linked_log / "metrics.jsonl").symlink_to(outside / "metrics.jsonl")
    linked_ckpt = runs / "linked-checkpoint"
    linked_ckpt.mkdir()
    (linked_ckpt / "metrics.jsonl").write_text((outside / "metrics.jsonl").read_text())
    (linked_ckpt / "checkpoint.pt").symlink_to(outside / "checkpoint.pt")
    srv, thread = _serve(runs)
    try:
        c = Client(srv.url)
        assert [r["id"] for r in c.ok("/api/runs")["runs"]] == ["linked-checkpoint"]
        c.error("/api/runs/linked-log", 404)
        run = c.ok("/api/runs/linked-checkpoint")
    finally:
        srv.shutdown()
        srv.server_close()
    assert run["epochs"] == 3 and run["model"] is None and run["config"] is None
    assert run["files"] == ["metrics.jsonl"]


def test_without_a_runs_folder(tmp_path):
    srv, thread = _serve(None)
    try:
        c = Client(srv.url)
        assert c.ok("/api/runs") == {"root": False, "runs": []}
        assert "cnnlab serve --runs DIR" in c.error("/api/runs/anything", 404)
    finally:
        srv.shutdown()
        srv.server_close()


# -- lectures -------------------------------------------------------------------------
def test_lectures_are_the_documents_sections(client):
    sections = client.ok("/api/lectures")["sections"]
    assert [s["id"] for s in sections] == list(SECTIONS)
    doc = (ROOT / "docs" / "lecture-numbers.md").read_text()
    for s in sections:
        assert f"## {s['title']}\n\n{s['markdown']}" in doc + "\n", s["id"]
    vgg = sections[0]["markdown"]
    assert "**138,357,544**" in vgg and "**15,237,608 values**" in vgg


# -- concurrency ----------------------------------------------------------------------
def test_a_busy_server_answers_503_json(monkeypatch):
    release = threading.Event()
    srv = server_module.ExplorerServer(("127.0.0.1", 0), workers=1, backlog=0, quiet=True)
    original = srv.answer

    def slow(path, query):
        if path == "/api/runs":
            release.wait(30)
        return original(path, query)

    srv.answer = slow
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    c = Client(srv.url)
    try:
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(c.get, "/api/runs")
            deadline = time.monotonic() + 10
            while srv.waiting._value and time.monotonic() < deadline:  # the slot is taken
                time.sleep(0.01)
            status, body, _ = c.get("/api/models")
            release.set()
            assert first.result()[0] == 200
        assert status == 503 and "busy" in body["error"]
        assert c.get("/api/runs")[0] == 200  # and it recovers
    finally:
        release.set()
        srv.shutdown()
        srv.server_close()


def test_200_concurrent_requests_for_a_heavy_model(monkeypatch):
    """The concurrency promise: 200 requests at once for a heavy model are all answered,
    from one analysis (single-flight cache), in bounded time; the server lives on."""
    calls = []
    real = api.analyse

    def counted(name, size):
        calls.append((name, size))
        return real(name, size)

    monkeypatch.setattr(api, "analyse", counted)
    srv, thread = _serve(None)
    host, port = srv.server_address[:2]

    def one(_):
        conn = http.client.HTTPConnection(host, port, timeout=120)
        try:
            conn.request("GET", "/api/models/efficientnet_b7")
            res = conn.getresponse()
            return res.status, len(res.read())
        finally:
            conn.close()

    try:
        start = time.monotonic()
        with ThreadPoolExecutor(200) as pool:
            answers = list(pool.map(one, range(200)))
        elapsed = time.monotonic() - start
        assert [s for s, _ in answers] == [200] * 200
        assert len({n for _, n in answers}) == 1  # the same body for everyone
        assert calls == [("efficientnet_b7", (3, 600, 600))]
        assert elapsed < 120
        assert Client(srv.url).ok("/api/models")["models"]  # still serving
    finally:
        srv.shutdown()
        srv.server_close()


def test_computed_macs_where_the_paper_states_none_by_hand(client):
    models = {m["name"]: m for m in client.ok("/api/models")["models"]}
    assert models["resnet20"]["macs"] is None  # the paper gives no MACs for ResNet-20
    # ResNet-20 (He et al. 2016, Sec. 4.2) at 32x32: the 3x3 stem, 3 stages of 6 3x3 convs
    # (16, 32, 64 channels at 32, 16, 8 pixels; option A shortcuts cost nothing), the fc
    stem = 32 * 32 * 16 * 27
    stages = (6 * 32 * 32 * 16 * 144
              + 16 * 16 * 32 * 144 + 5 * 16 * 16 * 32 * 288
              + 8 * 8 * 64 * 288 + 5 * 8 * 8 * 64 * 576)
    assert models["resnet20"]["macs_measured"] == stem + stages + 64 * 10 == 40_551_040
    assert all(m["macs_measured"] for m in models.values())  # every model has a count


def test_any_case_names_as_the_registry(client):
    assert client.ok("/api/models/VGG16?input=64")["info"]["name"] == "vgg16"


def test_the_cli_serves_on_loopback_and_refuses_bad_options(tmp_path, capsys):
    import subprocess
    import sys

    from cnnlab.cli import main

    assert main(["serve", "--port", "70000"]) == 2
    assert "--port must be between 0 and 65535" in capsys.readouterr().err
    assert main(["serve", "--runs", str(tmp_path / "missing")]) == 2
    assert "no such folder" in capsys.readouterr().err

    proc = subprocess.Popen([sys.executable, "-m", "cnnlab", "serve", "--port", "0", "--runs",
                             str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        line = proc.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert url, line
        assert Client(url.group(0)).ok("/api/runs") == {"root": True, "runs": []}
    finally:
        proc.terminate()
        proc.wait(30)


def test_the_wheel_ships_every_file_of_the_page():
    """pyproject's package-data globs cover the page, so `pip install cnnlab` serves it."""
    import fnmatch

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["cnnlab"]
    package = ROOT / "src" / "cnnlab"
    static = sorted(p for p in (package / "explorer" / "static").rglob("*") if p.is_file())
    assert len(static) >= 10
    for path in static:
        rel = path.relative_to(package).as_posix()
        # setuptools' globs do not cross "/" with "*"
        assert any(fnmatch.fnmatch(rel, p) and rel.count("/") == p.count("/")
                   for p in patterns), rel
