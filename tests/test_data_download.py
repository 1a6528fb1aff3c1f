"""Downloads against a real HTTP server on 127.0.0.1 (started here, in a thread) serving
archives the tests generate: resume after a dropped connection, checksum mismatch,
malicious archives, and the whole `cnnlab data download/verify/info` flow."""

import hashlib
import io
import tarfile
import zipfile

import pytest

from cnnlab.cli import main
from cnnlab.data import SAMPLE_ROOT, DatasetError, catalog, load_dataset
from cnnlab.data.catalog import RemoteFile, Source
from cnnlab.data.download import ChecksumError, DownloadError, fetch, safe_extract, verify

from data_files import write_cifar10
from local_server import serving


@pytest.fixture
def server():
    with serving() as httpd:
        yield httpd


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def payload(n: int = 300_000) -> bytes:
    return bytes((i * 7 + i // 251) % 256 for i in range(n))


def test_fetch_writes_only_after_checksum(server, tmp_path):
    data = payload()
    server.files["blob.bin"] = data
    path = fetch(f"{server.url}/blob.bin", tmp_path / "blob.bin", md5(data), backoff=0)
    assert path.read_bytes() == data and not (tmp_path / "blob.bin.part").exists()
    # a good file already there is not fetched again
    fetch(f"{server.url}/blob.bin", tmp_path / "blob.bin", md5(data), backoff=0)
    assert len(server.requests) == 1


def test_dropped_connection_is_resumed_with_range(server, tmp_path):
    data = payload()
    server.files["blob.bin"] = data
    server.drop.add("blob.bin")
    fetch(f"{server.url}/blob.bin", tmp_path / "blob.bin", md5(data), retries=2, backoff=0)
    assert (tmp_path / "blob.bin").read_bytes() == data
    assert server.requests == [("blob.bin", None), ("blob.bin", f"bytes={len(data) // 2}-")]


def test_partial_file_survives_a_failed_run_and_resumes_next_run(server, tmp_path):
    data = payload()
    server.files["blob.bin"] = data
    server.drop.add("blob.bin")
    with pytest.raises(DownloadError, match=r"blob.bin.part is kept"):
        fetch(f"{server.url}/blob.bin", tmp_path / "blob.bin", md5(data), retries=0)
    assert not (tmp_path / "blob.bin").exists()
    assert (tmp_path / "blob.bin.part").stat().st_size == len(data) // 2
    fetch(f"{server.url}/blob.bin", tmp_path / "blob.bin", md5(data), retries=0)
    assert (tmp_path / "blob.bin").read_bytes() == data
    assert server.requests[-1] == ("blob.bin", f"bytes={len(data) // 2}-")


def test_server_without_range_support_restarts_from_zero(server, tmp_path):
    data = payload()
    server.files["blob.bin"] = data
    server.drop.add("blob.bin")
    server.ignore_range = True  # answers 200 with the whole file to a Range request
    fetch(f"{server.url}/blob.bin", tmp_path / "blob.bin", md5(data), retries=1, backoff=0)
    assert (tmp_path / "blob.bin").read_bytes() == data
    assert server.requests[1] == ("blob.bin", f"bytes={len(data) // 2}-")


def test_checksum_mismatch_deletes_and_reports_both(server, tmp_path):
    server.files["blob.bin"] = payload()
    wrong = "0" * 32
    with pytest.raises(ChecksumError, match=f"is {md5(payload())}, expected {wrong}"):
        fetch(f"{server.url}/blob.bin", tmp_path / "blob.bin", wrong, backoff=0)
    assert list(tmp_path.iterdir()) == []


def test_missing_file_tries_next_mirror(server, tmp_path):
    data = payload(1000)
    server.files["b/blob.bin"] = data
    urls = (f"{server.url}/a/blob.bin", f"{server.url}/b/blob.bin")
    fetch(urls, tmp_path / "blob.bin", md5(data), backoff=0)
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch(f"{server.url}/nothing", tmp_path / "x", md5(data), backoff=0)
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.part").exists()


def test_official_mnist_md5s_fetch_the_official_test_files(server, tmp_path):
    # The bundled test files are the official ones; served locally, the catalog's MD5s
    # (from LeCun's page) must accept them.
    for remote in catalog.SOURCES["mnist"].files:
        if remote.name.startswith("t10k"):
            server.files[remote.name] = (SAMPLE_ROOT / remote.name).read_bytes()
            fetch(f"{server.url}/{remote.name}", tmp_path / remote.name, remote.md5, backoff=0)
    assert len(list(tmp_path.glob("t10k-*.gz"))) == 2


def tar_bytes(entries) -> bytes:
    """entries: (TarInfo, data or None)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info, data in entries:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def member(name, kind=tarfile.REGTYPE, linkname=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


MALICIOUS_TARS = {
    "parent": [(member("ok.txt"), b"fine"), (member("../escaped.txt"), b"evil")],
    "absolute": [(member("/tmp/cnnlab-absolute-escape.txt"), b"evil")],
    "symlink": [(member("link", tarfile.SYMTYPE, "/etc/passwd"), None)],
    "hardlink": [(member("ok.txt"), b"x"), (member("hard", tarfile.LNKTYPE, "../../x"), None)],
    "device": [(member("dev", tarfile.CHRTYPE), None)],
    "fifo": [(member("pipe", tarfile.FIFOTYPE), None)],
}


@pytest.mark.parametrize("kind", sorted(MALICIOUS_TARS))
def test_malicious_tar_extracts_nothing(tmp_path, kind):
    archive = tmp_path / "evil.tar.gz"
    archive.write_bytes(tar_bytes(MALICIOUS_TARS[kind]))
    dest = tmp_path / "dest"
    with pytest.raises(DatasetError, match="refusing to extract .* nothing was extracted"):
        safe_extract(archive, dest)
    assert list(dest.iterdir()) == []
    assert not (tmp_path / "escaped.txt").exists()


def zip_bytes(entries) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data, mode in entries:
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            zf.writestr(info, data)
    return buffer.getvalue()


@pytest.mark.parametrize("entries", [
    [("ok.txt", b"x", 0o100644), ("../escaped.txt", b"evil", 0o100644)],
    [("/abs.txt", b"evil", 0o100644)],
    [("C:\\windows.txt", b"evil", 0o100644)],
    [("link", b"/etc/passwd", 0o120777)],
    [("dev", b"", 0o020644)],
], ids=["parent", "absolute", "drive", "symlink", "device"])
def test_malicious_zip_extracts_nothing(tmp_path, entries):
    archive = tmp_path / "evil.zip"
    archive.write_bytes(zip_bytes(entries))
    dest = tmp_path / "dest"
    with pytest.raises(DatasetError, match="refusing to extract"):
        safe_extract(archive, dest)
    assert list(dest.iterdir()) == [] and not (tmp_path / "escaped.txt").exists()


def test_good_zip_and_tar_extract(tmp_path):
    (tmp_path / "a.zip").write_bytes(zip_bytes([("d/x.txt", b"hi", 0o100644)]))
    assert [p.name for p in safe_extract(tmp_path / "a.zip", tmp_path / "out")] == ["d"]
    assert (tmp_path / "out" / "d" / "x.txt").read_bytes() == b"hi"
    (tmp_path / "b.tgz").write_bytes(tar_bytes([(member("d/y.txt"), b"yo")]))
    safe_extract(tmp_path / "b.tgz", tmp_path / "out")  # replaces d/ wholesale
    assert [p.name for p in (tmp_path / "out" / "d").iterdir()] == ["y.txt"]
    (tmp_path / "c.tgz").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(DatasetError, match="c.tgz: not a tar or zip archive"):
        safe_extract(tmp_path / "c.tgz", tmp_path / "out")


def test_a_failed_move_keeps_what_was_extracted_before(tmp_path, monkeypatch):
    import os

    from cnnlab.data import download

    out = tmp_path / "out"
    (out / "d").mkdir(parents=True)
    (out / "d" / "old.txt").write_bytes(b"saved")
    (tmp_path / "b.tgz").write_bytes(tar_bytes([(member("d/new.txt"), b"new")]))
    real_replace = os.replace

    def failing_replace(src, dst):
        if ".extract-" in str(src):  # moving the new copy into place fails
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(download.os, "replace", failing_replace)
    with pytest.raises(DatasetError, match="b.tgz: cannot extract .*No space"):
        safe_extract(tmp_path / "b.tgz", out)
    assert [p.name for p in out.iterdir()] == ["d"]  # no temporary folders either
    assert [p.name for p in (out / "d").iterdir()] == ["old.txt"]
    assert (out / "d" / "old.txt").read_bytes() == b"saved"


def cifar_archive(tmp_path) -> tuple[bytes, tuple]:
    """A cifar-10-python.tar.gz made like the official one, and its contents' MD5s."""
    src = tmp_path / "src"
    write_cifar10(src, per_batch=4)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    contents = tuple(
        (f"cifar-10-batches-py/{p.name}", md5(p.read_bytes()))
        for p in sorted((src / "cifar-10-batches-py").iterdir())
    )
    return buffer.getvalue(), contents


def test_cli_download_verify_info_flow(server, tmp_path, monkeypatch, capsys):
    archive, contents = cifar_archive(tmp_path)
    server.files["cifar-10-python.tar.gz"] = archive
    server.drop.add("cifar-10-python.tar.gz")  # the first attempt breaks off halfway
    remote = RemoteFile("cifar-10-python.tar.gz", md5(archive),
                        (f"{server.url}/cifar-10-python.tar.gz",), extract=True)
    monkeypatch.setitem(catalog.SOURCES, "cifar10",
                        Source("cifar10", "local", (remote,), contents=contents,
                               counts=(("train", 20), ("test", 4))))
    monkeypatch.setattr("cnnlab.data.download.time.sleep", lambda s: None)
    root = tmp_path / "root"
    assert main(["data", "download", "cifar10", "--root", str(root)]) == 0
    assert "resuming at byte" in capsys.readouterr().err
    assert main(["data", "verify", "cifar10", "--root", str(root)]) == 0
    assert "all 8 checks passed" in capsys.readouterr().out
    assert len(load_dataset("cifar10", root=root)["train"]) == 20
    assert main(["data", "info", "cifar10", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "train: 20 images, 3x32x32, 10 classes (airplane" in out
    # a damaged batch fails verification: exit 2 and one line naming the file
    batch = root / "cifar-10-batches-py" / "data_batch_2"
    batch.write_bytes(batch.read_bytes()[:-1] + b"\x00")
    assert main(["data", "verify", "cifar10", "--root", str(root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data_batch_2" in err[0]


def test_cli_download_of_malicious_archive_leaves_nothing(server, tmp_path, monkeypatch, capsys):
    archive = tar_bytes(MALICIOUS_TARS["parent"])
    server.files["evil.tgz"] = archive
    remote = RemoteFile("evil.tgz", md5(archive), (f"{server.url}/evil.tgz",), extract=True)
    monkeypatch.setitem(catalog.SOURCES, "imagenette", Source("imagenette", "local", (remote,)))
    root = tmp_path / "root"
    assert main(["data", "download", "imagenette", "--root", str(root)]) == 2
    assert "refusing to extract '../escaped.txt'" in capsys.readouterr().err
    assert sorted(p.name for p in root.iterdir()) == ["evil.tgz"]
    assert not (tmp_path / "escaped.txt").exists()


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["data", "download", "imagenet", "--root", str(tmp_path)]) == 2
    assert "register at image-net.org" in capsys.readouterr().err
    assert main(["data", "verify", "mnist", "--root", str(tmp_path / "nope")]) == 2
    assert "nope does not exist" in capsys.readouterr().err
    # the CLI refuses --retries -1 while parsing (tests/test_cli.py); the library itself too
    with pytest.raises(ValueError, match="retries must be 0 or more, got -1"):
        fetch("http://127.0.0.1:9/x", tmp_path / "m" / "x", "0" * 32, retries=-1)
    assert not (tmp_path / "m").exists()
    assert main(["data", "info", "mnist-sample", "--json"]) == 0
    assert '"count": 10000' in capsys.readouterr().out
    assert main(["data", "verify", "mnist", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "4 of 4 checks failed" in err and "missing" in err


def test_verify_counts_imagenette(tmp_path):
    from data_files import write_folder

    write_folder(tmp_path / "imagenette2-160" / "train", classes=("n01440764",), per_class=2)
    write_folder(tmp_path / "imagenette2-160" / "val", classes=("n01440764",), per_class=1)
    checks = verify("imagenette", tmp_path)
    assert [(c.what, c.expected, c.found) for c in checks] == [
        ("imagenette train images", "9469", "2"), ("imagenette val images", "3925", "1")]
