"""Bad dataset files: one clear error naming the file (or a warning and a skip), never a
traceback, a silent truncation, a gzip bomb decompressed, or a symlink followed outside."""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import shutil
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab.cli import main
from cnnlab.data import DatasetError, load_dataset
from cnnlab.data.folder import decode_image, load_folder
from cnnlab.data.idx import read_idx

from data_files import idx_bytes, write_cifar10, write_idx, write_mnist

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


# --- IDX -------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
def test_idx_trailing_bytes_are_refused(tmp_path, gz):
    data = idx_bytes(np.zeros((2, 3, 3), np.uint8)) + b"\x00junk"
    path = tmp_path / ("x.gz" if gz else "x")
    path.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(DatasetError, match=r"shape \(2, 3, 3\) = 18 bytes of data but the "
                                           r"file holds (more \(trailing bytes\)|23)"):
        read_idx(path)


@pytest.mark.parametrize("shape, words", [((0, 28, 28), "holds 0 images"),
                                          ((5, 0, 0), "images of 0x0 pixels"),
                                          ((5, 28, 0), "images of 28x0 pixels")])
def test_idx_with_no_images_or_empty_images(tmp_path, capsys, shape, words):
    write_mnist(tmp_path)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros(shape, np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(shape[0], np.uint8))
    with pytest.raises(DatasetError, match=words):
        load_dataset("mnist", root=tmp_path)
    assert main(["data", "info", "mnist", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train-images-idx3-ubyte.gz" in err and words in err


def test_gzip_bomb_is_refused_from_its_header(tmp_path, monkeypatch):
    # a header declaring 40,000 images of 1000x1000 (40 GB) over a small stream of zeros:
    # refused from the 16 header bytes, before the data is decompressed
    header = bytes([0, 0, 8, 3]) + struct.pack(">3I", 40_000, 1000, 1000)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(header + bytes(1 << 20)))
    decompressed = []
    real = zlib.decompressobj

    def counting(*args, **kw):
        obj = real(*args, **kw)

        class Counter:
            def decompress(self, data, max_length=0):
                out = obj.decompress(data, max_length)
                decompressed.append(len(out))
                return out

            def __getattr__(self, name):
                return getattr(obj, name)
        return Counter()

    monkeypatch.setattr(zlib, "decompressobj", counting)
    with pytest.raises(DatasetError, match=r"declares shape \(40000, 1000, 1000\) = "
                                           r"40,000,000,000 bytes.*more than"):
        read_idx(path)
    assert sum(decompressed) < 1 << 20  # it never decompressed the megabyte of zeros


def test_raw_idx_too_large_for_its_file_is_refused_without_reading(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">3I", 4, 4, 4) + bytes(10))
    with pytest.raises(DatasetError, match="= 64 bytes of data but the file holds 10"):
        read_idx(path)


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="needs ../shared/data/mnist")
def test_fashion_mnist_given_mnists_files_says_which_they_are(tmp_path, capsys):
    for f in SHARED_MNIST.iterdir():
        os.symlink(f, tmp_path / f.name)
    with pytest.raises(DatasetError, match=r"official MNIST .*not fashion-mnist"):
        load_dataset("fashion-mnist", root=tmp_path)
    assert load_dataset("mnist", root=tmp_path)["test"].images.shape == (10_000, 1, 28, 28)


def test_known_files_are_recognised_by_md5(tmp_path, monkeypatch):
    # without the 50 MB of real files: the catalog's MNIST MD5 stood in by a small file's
    from cnnlab.data import catalog

    write_mnist(tmp_path)
    small = tmp_path / "t10k-labels-idx1-ubyte.gz"
    md5 = hashlib.md5(small.read_bytes()).hexdigest()
    files = catalog.SOURCES["kmnist"].files
    fake = catalog.RemoteFile(files[3].name, md5, files[3].urls)
    kmnist = catalog.SOURCES["kmnist"]
    monkeypatch.setitem(catalog.SOURCES, "kmnist",
                        catalog.Source(kmnist.name, kmnist.homepage, (*files[:3], fake)))
    with pytest.raises(DatasetError, match=r"t10k-labels-idx1-ubyte.gz is the official "
                                           r"KMNIST file, not mnist's"):
        load_dataset("mnist", root=tmp_path)
    assert len(load_dataset("kmnist", root=tmp_path)["test"]) == 20  # its own name: fine


# --- CIFAR -----------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["3", 1.5, True, -1, 10, None])
def test_cifar_labels_must_be_integers_in_range(tmp_path, capsys, bad):
    write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    batch = pickle.loads(path.read_bytes(), encoding="bytes")
    batch[b"labels"][3] = bad
    path.write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(DatasetError, match=r"data_batch_2: label 3 is .*; labels must be "
                                           r"integers 0\.\.9"):
        load_dataset("cifar10", root=tmp_path)


# --- image folders ---------------------------------------------------------------------


def image_folder(root: Path, classes=("a", "b"), per_class=2) -> Path:
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.new("RGB", (8, 8), (40 * i, 80, 120)).save(root / c / f"{i}.png")
    return root


def test_train_names_a_corrupt_image_and_skip_corrupt_trains(tmp_path, capsys):
    root = image_folder(tmp_path / "imgs", per_class=3)
    bad = root / "b" / "1.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    argv = ["train", "lenet5_modern", "--data", "folder", "--root", str(root), "--epochs", "1",
            "--batch-size", "2", "--quiet", "--set", "augment=none"]
    assert main([*argv, "--out", str(tmp_path / "r1")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(bad) in err and "--skip-corrupt" in err, err
    code = main([*argv, "--out", str(tmp_path / "r2"), "--skip-corrupt"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "1.png" in out + err and "skipped 1" in out + err


def test_decompression_bomb_warning_becomes_our_one_line_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 12x12 = 144 > 100: Pillow warns
    root = image_folder(tmp_path / "imgs")
    big = root / "a" / "big.png"
    Image.new("RGB", (12, 12)).save(big)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(DatasetError, match=r"big\.png: .*144 pixels.*limit"):
            decode_image(big)
    assert not [w for w in seen if issubclass(w.category, Image.DecompressionBombWarning)]
    assert main(["data", "info", "folder", "--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("cnnlab: error:") and "big.png" in err


def test_symlinks_out_of_the_folder_are_skipped_with_a_warning(tmp_path):
    root = image_folder(tmp_path / "imgs")
    outside = tmp_path / "secret"
    outside.mkdir()
    Image.new("RGB", (8, 8)).save(outside / "x.png")
    os.symlink(outside / "x.png", root / "a" / "link.png")
    os.symlink(outside, root / "b" / "sub")  # a folder link: its files are outside too
    os.symlink(root / "a" / "0.png", root / "b" / "inside.png")  # inside: kept
    with pytest.warns(UserWarning, match=r"link\.png.* outside .*imgs.*skipped") as seen:
        ds = load_folder(root)["train"]
    paths = {p.name for p, _ in ds.samples}
    assert "link.png" not in paths and "x.png" not in paths and "inside.png" in paths
    assert len(ds) == 5 and len(seen) >= 1


def test_symlink_warning_is_one_cli_line(tmp_path, capsys):
    root = image_folder(tmp_path / "imgs")
    os.symlink(shutil.which("python3") or "/bin/sh", root / "a" / "evil.png")
    assert main(["data", "info", "folder", "--root", str(root)]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "evil.png" in line]
    assert len(lines) == 1 and lines[0].startswith("cnnlab: warning:")


def test_predict_on_a_bomb_under_twice_the_limit_prints_no_warning_first(tmp_path, capsys):
    # 10000x10000 = 1e8 pixels: over Pillow's MAX_IMAGE_PIXELS (89,478,485), under twice it,
    # so Pillow only warns, then the empty pixel data fails; only our line may reach stderr
    from test_train_cli import _foreign_checkpoint

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    bomb = tmp_path / "big.png"
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n"
                     + chunk(b"IHDR", struct.pack(">IIBBBBB", 10000, 10000, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    ckpt = _foreign_checkpoint(tmp_path / "ten.pt", 10)
    assert main(["predict", ckpt, str(bomb), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("cnnlab: error:"), err
    assert "big.png" in err and "100000000 pixels" in err
