"""Downloads write no more than the catalog's size (plus a margin): an endless response from
a local 127.0.0.1 server stops with a clear error; a corrupt file at the destination is
fetched again; every catalog file that can be downloaded pins its size."""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cnnlab.cli import main
from cnnlab.data import catalog
from cnnlab.data.catalog import SOURCES, RemoteFile, Source
from cnnlab.data.download import DownloadError, byte_limit, fetch
from test_data_download import md5, payload, server  # noqa: F401 (server is a fixture)


class Endless(BaseHTTPRequestHandler):
    """Streams zeros for as long as the client reads; with ``?length`` it announces a
    Content-Length of 1000 first (and streams on regardless)."""

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_response(200)
        if "length" in self.path:
            self.send_header("Content-Length", "1000")
        self.end_headers()
        block = bytes(1 << 16)
        try:
            while True:
                self.wfile.write(block)
                self.server.sent += len(block)
        except OSError:  # the client hung up
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def endless():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Endless)
    httpd.sent = 0
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_byte_limit_is_the_size_plus_a_small_margin():
    assert byte_limit(9_912_422) == 9_912_422 + 99_124  # 1%
    assert byte_limit(4_542) == 4_542 + 65_536  # at least 64 KiB
    assert byte_limit(None) is None


def test_endless_response_stops_at_the_catalog_size(endless, tmp_path):
    dest = tmp_path / "t10k-labels-idx1-ubyte.gz"
    with pytest.raises(DownloadError, match=r"sent more than the 70,078 bytes allowed for "
                                            r"t10k-labels-idx1-ubyte.gz \(the official file "
                                            r"has 4,542\)"):
        fetch(f"{endless.url}/x", dest, "0" * 32, size=4_542, retries=0)
    assert not dest.exists() and not dest.with_name(dest.name + ".part").exists()


def test_endless_response_after_a_content_length_is_read_only_that_far(endless, tmp_path):
    # without a size, the announced length bounds the read (http.client stops there)
    with pytest.raises(DownloadError, match="MD5 of f is"):
        fetch(f"{endless.url}/x?length", tmp_path / "f", "0" * 32, retries=0)
    assert list(tmp_path.iterdir()) == []


def test_cli_download_of_an_endless_file_is_one_line(endless, tmp_path, capsys, monkeypatch):
    name = "t10k-labels-idx1-ubyte.gz"
    monkeypatch.setitem(catalog.SOURCES, "mnist", Source(
        "mnist", "", (RemoteFile(name, "0" * 32, ("unused",), size=4_542),)))
    code = main(["data", "download", "mnist", "--root", str(tmp_path), "--mirror", endless.url,
                 "--retries", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("cnnlab: error: ") and "70,078 bytes" in err[-1]
    assert list(tmp_path.iterdir()) == []


def test_a_corrupt_file_at_the_destination_is_fetched_again(server, tmp_path):  # noqa: F811
    data = payload(5000)
    server.files["f.bin"] = data
    dest = tmp_path / "f.bin"
    dest.write_bytes(data[:-1] + b"\x00")  # one byte wrong: a corrupt earlier copy
    fetch(f"{server.url}/f.bin", dest, md5(data), size=len(data))
    assert dest.read_bytes() == data and [n for n, _ in server.requests] == ["f.bin"]
    fetch(f"{server.url}/f.bin", dest, md5(data), size=len(data))  # now good: not fetched
    assert len(server.requests) == 1


def test_every_downloadable_file_pins_its_size():
    unpinned = [f"{s.name}/{f.name}" for s in SOURCES.values() for f in s.files
                if f.size is None]
    assert unpinned == ["imagenette/imagenette2-160.tgz"]  # capped by Content-Length instead
    # MNIST's four official files, as on LeCun's page (and ../shared/data/mnist)
    assert [f.size for f in SOURCES["mnist"].files] == [9_912_422, 28_881, 1_648_877, 4_542]


def test_official_mnist_sizes_match_the_real_files():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
    if not root.is_dir():
        pytest.skip("needs ../shared/data/mnist")
    for f in SOURCES["mnist"].files:
        path = root / f.name
        assert path.stat().st_size == f.size
        assert hashlib.md5(path.read_bytes()).hexdigest() == f.md5
