"""CIFAR pickles (read safely), SVHN .mat files and image folders, generated in real formats."""

import os
import pickle

import numpy as np
import pytest
import torch

from cnnlab.data import DatasetError, load_dataset
from cnnlab.data.cifar import read_cifar_pickle
from cnnlab.data.folder import ImageFolderDataset
from cnnlab.data.loader import FolderLoader, make_loader
from cnnlab.data.transforms import random_crop

from data_files import write_cifar10, write_cifar100, write_folder, write_image, write_svhn


def test_cifar10_reads_official_layout(tmp_path):
    written = write_cifar10(tmp_path, per_batch=7)
    splits = load_dataset("cifar10", root=tmp_path)
    train, test = splits["train"], splits["test"]
    assert (len(train), len(test)) == (35, 7)
    assert train.images.shape == (35, 3, 32, 32) and train.images.dtype == torch.uint8
    assert train.classes[0] == "airplane" and train.classes[9] == "truck"
    # image 8 = batch 2, row 1; its red plane is the first 1024 values, row-major
    data, labels = written["data_batch_2"]
    assert np.array_equal(train.images[8, 0].numpy(), data[1, :1024].reshape(32, 32))
    assert np.array_equal(train.images[8, 2].numpy(), data[1, 2048:].reshape(32, 32))
    assert int(train.labels[8]) == labels[1]
    # also when root is the batches folder itself
    assert len(load_dataset("cifar10", root=tmp_path / "cifar-10-batches-py")["test"]) == 7


def test_cifar100_fine_labels(tmp_path):
    written = write_cifar100(tmp_path)
    splits = load_dataset("cifar100", root=tmp_path, val_size=5, seed=1)
    assert len(splits["train"].classes) == 100
    assert (len(splits["train"]), len(splits["val"]), len(splits["test"])) == (25, 5, 10)
    assert splits["test"].labels.tolist() == written["test"][1]


class CreatesFile:
    """Unpickling this would create ``path`` (if anything ran)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


class RunsShell:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return os.system, (f"touch {self.path}",)


@pytest.mark.parametrize("payload", [CreatesFile, RunsShell])
def test_malicious_pickle_runs_nothing(tmp_path, payload):
    write_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    evil = {b"data": np.zeros((1, 3072), np.uint8), b"labels": [payload(marker)]}
    batch.write_bytes(pickle.dumps(evil, protocol=2))
    with pytest.raises(DatasetError, match=r"data_batch_3: refused to unpickle \(global "):
        load_dataset("cifar10", root=tmp_path)
    assert not marker.exists()


def _global(module: str, name: str) -> bytes:
    """Protocol-0 GLOBAL opcode: push ``module.name`` (found through find_class)."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


@pytest.mark.parametrize("module, name", [
    ("builtins", "eval"), ("builtins", "getattr"), ("os", "system"), ("subprocess", "Popen"),
    ("copyreg", "_reconstructor"), ("numpy", "load"), ("numpy", "frombuffer"),
    ("numpy.core.multiarray", "scalar"), ("numpy.lib.format", "read_array"),
])
def test_every_other_global_is_refused_before_it_is_called(tmp_path, module, name):
    path = tmp_path / "evil"
    path.write_bytes(_global(module, name) + b"(Vx\ntR.")  # module.name("x")
    with pytest.raises(DatasetError, match=rf"refused to unpickle \(global {module}\.{name} "):
        read_cifar_pickle(path)


# BUILD (``b``) on an allowed global sets attributes on it: on a plain function, its
# __defaults__ or __dict__ would change how every later file in the process is read.
# Hand-written, since pickle.dumps never writes these; V is a str, ``(N}...st`` is
# (None, {key: value}), the (state, slotstate) pair BUILD applies with setattr.
@pytest.mark.parametrize("payload, refusal", [
    (_global("numpy", "dtype") + b"(N}V__defaults__\n(I1\nI1\ntstb.", "refused to unpickle"),
    (_global("_codecs", "encode") + b"(N}V__defaults__\n(Vutf-8\ntstb.", "refused to unpickle"),
    (_global("_codecs", "encode") + b"}V__wrapped__\nVx\nsb.", "not a readable CIFAR pickle"),
    (_global("numpy", "ndarray") + b"}Vshape\nVx\nsb.", "not a readable CIFAR pickle"),
    (_global("numpy", "ndarray") + b"(N}Vshape\nVx\nstb.", "not a readable CIFAR pickle"),
], ids=["dtype-defaults", "encode-defaults", "encode-dict", "ndarray-dict", "ndarray-slot"])
def test_allowed_globals_cannot_be_modified(tmp_path, payload, refusal):
    from cnnlab.data import cifar

    before = {key: (getattr(f, "__defaults__", None), getattr(f, "__dict__", None))
              for key, f in cifar.CifarUnpickler.ALLOWED.items()}
    path = tmp_path / "evil"
    path.write_bytes(payload)
    with pytest.raises(DatasetError, match=refusal):
        read_cifar_pickle(path)
    after = {key: (getattr(f, "__defaults__", None), getattr(f, "__dict__", None))
             for key, f in cifar.CifarUnpickler.ALLOWED.items()}
    assert after == before
    assert cifar._latin1.__defaults__ == ("latin1",) and cifar._dtype.__defaults__ == (False, False)


def test_dtypes_are_shared_number_types_whose_flags_build_cannot_set():
    import io

    from cnnlab.data.cifar import CifarUnpickler

    def load(payload):
        return CifarUnpickler(io.BytesIO(payload), encoding="bytes").load()

    # dtype("u1", False, True) as numpy pickles it, then BUILD with flags 63 (NPY_ITEM_HASOBJECT
    # among them): on a copy those flags would stick and claim the dtype holds objects
    dtype = load(_global("numpy", "dtype")
                 + b"(Vu1\nI00\nI01\ntR(I3\nV|\nNNNI-1\nI-1\nI63\ntb.")
    assert dtype == np.dtype("u1") and not dtype.hasobject and dtype.flags == 0
    for spec in ("V8", ">u4", "S3", "M8[s]"):
        with pytest.raises(pickle.UnpicklingError, match="not a built-in number type"):
            load(_global("numpy", "dtype") + b"(V" + spec.encode() + b"\nI00\nI01\ntR.")


def test_object_dtype_refused_in_reconstruct_too(tmp_path):
    # _reconstruct(ndarray, (1,), "O") without a BUILD would leave an object array.
    path = tmp_path / "evil"
    path.write_bytes(_global("numpy.core.multiarray", "_reconstruct") + b"("
                     + _global("numpy", "ndarray") + b"(I1\ntVO\ntR.")
    with pytest.raises(DatasetError, match="holds Python objects"):
        read_cifar_pickle(path)


def test_object_arrays_and_truncation_refused(tmp_path):
    path = tmp_path / "objects"
    path.write_bytes(pickle.dumps({b"data": np.array([1, "x"], dtype=object)}, protocol=2))
    with pytest.raises(DatasetError, match="holds Python objects"):
        read_cifar_pickle(path)
    write_cifar10(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes(batch.read_bytes()[:1000])
    with pytest.raises(DatasetError, match="test_batch: not a readable CIFAR pickle"):
        load_dataset("cifar10", root=tmp_path)


def test_cifar_label_count_mismatch(tmp_path):
    write_cifar10(tmp_path)
    bad = {b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2]}
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(DatasetError, match="data_batch_1: 4 images but 3 labels"):
        load_dataset("cifar10", root=tmp_path)


def test_svhn_mat(tmp_path):
    pytest.importorskip("scipy")
    written = write_svhn(tmp_path)
    splits = load_dataset("svhn", root=tmp_path)
    x, y = written["train"]
    train = splits["train"]
    assert train.images.shape == (12, 3, 32, 32)
    # image 4, green channel, is X[:, :, 1, 4]; label 10 means digit 0
    assert np.array_equal(train.images[4, 1].numpy(), x[:, :, 1, 4])
    assert train.labels.tolist() == [int(v) % 10 for v in y[:, 0]]
    (tmp_path / "test_32x32.mat").write_bytes(b"MATLAB 5.0 garbage")
    with pytest.raises(DatasetError, match="test_32x32.mat: not a readable .mat file"):
        load_dataset("svhn", root=tmp_path)
    import scipy.io

    scipy.io.savemat(tmp_path / "test_32x32.mat",
                     {"X": np.full((32, 32, 3, 2), 300.0), "y": np.ones((2, 1))})
    with pytest.raises(DatasetError, match=r"test_32x32.mat: 'X' must be a uint8 .* float64"):
        load_dataset("svhn", root=tmp_path)


def test_folder_with_splits(tmp_path):
    train_files = write_folder(tmp_path / "train", per_class=3)
    write_folder(tmp_path / "val", per_class=2, ext=".jpg")
    splits = load_dataset("folder", root=tmp_path)
    assert set(splits) == {"train", "val", "test"} and splits["test"] is splits["val"]
    train = splits["train"]
    assert train.classes == ["cat", "dog"] and len(train) == 6 and len(splits["val"]) == 4
    for i, (path, label) in enumerate(train.samples):
        image, got = train[i]
        assert got == label == ["cat", "dog"].index(path.parent.name)
        assert image.dtype == torch.uint8 and image.shape == (3, 12, 10)
        assert np.array_equal(image.permute(1, 2, 0).numpy(), train_files[path])  # PNG: exact
    mean, std = train.stats(max_images=None)
    pixels = np.stack(list(train_files.values())).reshape(-1, 3) / 255.0
    assert mean == pytest.approx(pixels.mean(0).tolist()) and std == pytest.approx(
        pixels.std(0).tolist())


def test_imagenette_names_and_plain_folder(tmp_path):
    write_folder(tmp_path / "imagenette2-160" / "train", classes=("n01440764", "n02102040"))
    write_folder(tmp_path / "imagenette2-160" / "val", classes=("n01440764", "n02102040"))
    splits = load_dataset("imagenette", root=tmp_path)
    assert splits["train"].classes == ["tench", "English springer"]
    write_folder(tmp_path / "plain", classes=("a", "b", "c"), per_class=1)
    assert list(load_dataset("folder", root=tmp_path / "plain")) == ["train"]


def test_corrupt_jpeg_fails_or_is_skipped(tmp_path):
    write_folder(tmp_path, per_class=2, ext=".jpg")
    good = (tmp_path / "dog" / "0.jpg").read_bytes()
    (tmp_path / "dog" / "1.jpg").write_bytes(good[: len(good) // 2])  # truncated JPEG
    (tmp_path / "cat" / "9.jpg").write_bytes(b"not a jpeg at all")
    ds = ImageFolderDataset(tmp_path)
    index = [str(p) for p, _ in ds.samples].index(str(tmp_path / "dog" / "1.jpg"))
    with pytest.raises(DatasetError, match=r"dog/1\.jpg: cannot decode image"):
        ds[index]
    skipping = load_dataset("folder", root=tmp_path, skip_corrupt=True)["train"]
    assert len(skipping) == 3 and len(skipping.skipped) == 2  # 5 files, 2 bad
    assert {p.name for p, _ in skipping.skipped} == {"1.jpg", "9.jpg"}


def test_empty_and_missing_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset("folder", root=tmp_path / "missing")
    with pytest.raises(DatasetError, match="no class folders"):
        load_dataset("folder", root=tmp_path)
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(DatasetError, match="empty_class: class folder holds no"):
        load_dataset("folder", root=tmp_path)
    with pytest.raises(DatasetError, match="expected train/ and val/"):
        load_dataset("imagenet", root=tmp_path)


def test_folder_loader_same_for_any_number_of_workers(tmp_path):
    write_folder(tmp_path, per_class=5, size=(10, 10))
    ds = ImageFolderDataset(tmp_path)

    def crop(x, g):
        return random_crop(x[None], 8, generator=g)[0]

    def batches(workers):
        loader = make_loader(ds, 4, shuffle=True, mean=[0.5] * 3, std=[0.25] * 3, seed=2,
                             sample_transform=crop, num_workers=workers)
        assert isinstance(loader, FolderLoader) and len(loader) == 3
        loader.set_epoch(1)
        return [(x, y) for x, y in loader]

    serial, parallel = batches(0), batches(2)
    assert len(serial) == 3
    for (x0, y0), (x2, y2) in zip(serial, parallel, strict=True):
        assert torch.equal(x0, x2) and torch.equal(y0, y2)
    assert serial[0][0].shape == (4, 3, 8, 8)
    write_image(tmp_path / "cat" / "big.png", np.zeros((20, 20, 3), np.uint8))
    with pytest.raises(ValueError, match="different shapes"):
        list(make_loader(ImageFolderDataset(tmp_path), 20, shuffle=False, mean=[0.5] * 3,
                         std=[0.25] * 3))


def test_rgb_eigen_of_a_folder_matches_numpy(tmp_path):
    from cnnlab.data.transforms import rgb_eigen

    written = write_folder(tmp_path, per_class=2, size=(6, 5))
    vals, _ = rgb_eigen(ImageFolderDataset(tmp_path))
    pixels = np.stack(list(written.values())).reshape(-1, 3).T / 255.0
    expected = np.linalg.eigvalsh(np.cov(pixels, bias=True))[::-1]
    np.testing.assert_allclose(vals.numpy(), expected, rtol=1e-5)


def test_option_errors(tmp_path):
    write_folder(tmp_path, per_class=2)
    with pytest.raises(ValueError, match="val_size applies to in-memory datasets"):
        load_dataset("folder", root=tmp_path, val_size=1)
    with pytest.raises(ValueError, match="unknown option.*: extra"):
        load_dataset("folder", root=tmp_path, extra=True)
