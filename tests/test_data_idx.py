"""MNIST-family IDX files (gz and raw), the bundled sample, and every way the files can be bad."""

import gzip
import hashlib

import numpy as np
import pytest
import torch

from cnnlab.data import SAMPLE_ROOT, DatasetError, load_dataset, split_train_val
from cnnlab.data.idx import read_idx

from data_files import idx_bytes, write_idx, write_mnist


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "kmnist"])
def test_reads_generated_idx_files(tmp_path, name, gz):
    arrays = write_mnist(tmp_path, gz=gz)
    splits = load_dataset(name, root=tmp_path)
    assert set(splits) == {"train", "test"}
    for split, (images, labels) in arrays.items():
        ds = splits[split]
        assert ds.images.dtype == torch.uint8 and ds.images.shape == (len(images), 1, 28, 28)
        assert ds.labels.dtype == torch.int64
        assert np.array_equal(ds.images[:, 0].numpy(), images)
        assert np.array_equal(ds.labels.numpy(), labels)
        assert len(ds.classes) == 10 and len(ds) == len(images)
        image, label = ds[3]
        assert image.shape == (1, 28, 28) and label == int(labels[3])


def test_class_names():
    # Xiao et al. 2017, Table 1; Clanuwat et al. 2018, Table 1.
    from cnnlab.data.idx import MNIST_FAMILY

    assert MNIST_FAMILY["fashion-mnist"][9] == "Ankle boot"
    assert MNIST_FAMILY["kmnist"][:3] == ["o", "ki", "su"]


def test_mean_std_match_numpy(tmp_path):
    arrays = write_mnist(tmp_path)
    ds = load_dataset("mnist", root=tmp_path)["train"]
    pixels = arrays["train"][0].astype(np.float64) / 255
    assert ds.mean == pytest.approx([pixels.mean()], rel=1e-9)
    assert ds.std == pytest.approx([pixels.std()], rel=1e-9)


def test_bundled_sample_is_the_official_data():
    # The test files are the official ones byte for byte (MD5s from LeCun's page / the issue).
    for name, md5 in (("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
                      ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c")):
        assert hashlib.md5((SAMPLE_ROOT / name).read_bytes()).hexdigest() == md5
    splits = load_dataset("mnist-sample", root="/ignored")
    train, test = splits["train"], splits["test"]
    assert (len(train), len(test)) == (10_000, 10_000)
    # The first training digits of MNIST are 5 0 4 1 9 2 1 3 1 4; the first test digits
    # 7 2 1 0 4 1 4 9 5 9; the official test set has 980 zeros ... 1009 nines.
    assert train.labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert test.labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    # the official test set's pixel mean and std are 0.1325 and 0.3105 (in [0, 1] units)
    assert test.mean[0] == pytest.approx(0.1325, abs=5e-5)
    assert test.std[0] == pytest.approx(0.3105, abs=5e-5)
    counts = torch.bincount(test.labels, minlength=10).tolist()
    assert counts == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert "CC BY-SA 3.0" in (SAMPLE_ROOT / "README.md").read_text()


def test_val_split_is_seeded_and_disjoint(tmp_path):
    write_mnist(tmp_path, n_train=50)
    full = load_dataset("mnist", root=tmp_path)["train"]
    a = load_dataset("mnist", root=tmp_path, val_size=10, seed=3)
    b = load_dataset("mnist", root=tmp_path, val_size=10, seed=3)
    c = load_dataset("mnist", root=tmp_path, val_size=10, seed=4)
    assert (len(a["train"]), len(a["val"])) == (40, 10)
    assert torch.equal(a["val"].images, b["val"].images)
    assert not torch.equal(a["val"].images, c["val"].images)
    # together the two parts are exactly the original samples
    rows = {bytes(x.numpy()) for x in torch.cat([a["train"].images, a["val"].images])}
    assert rows == {bytes(x.numpy()) for x in full.images}
    with pytest.raises(ValueError, match="val_size"):
        split_train_val(full, 50)


def test_truncated_gzip_names_the_file(tmp_path):
    write_mnist(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte\.gz: truncated"):
        load_dataset("mnist", root=tmp_path)


def test_wrong_magic_and_dims(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x12\x34\x08\x03" + bytes(20))
    with pytest.raises(DatasetError, match="not an IDX file"):
        read_idx(bad)
    float_type = tmp_path / "float"
    float_type.write_bytes(b"\x00\x00\x0d\x01" + (1).to_bytes(4, "big") + bytes(4))
    with pytest.raises(DatasetError, match="type code 0x0d"):
        read_idx(float_type)
    short = tmp_path / "short"
    short.write_bytes(idx_bytes(np.zeros((3, 4, 4), np.uint8))[:-5])
    with pytest.raises(DatasetError, match=r"shape \(3, 4, 4\) = 48 bytes .* holds 43"):
        read_idx(short)
    # an images file with 2 dimensions
    write_mnist(tmp_path / "m")
    write_idx(tmp_path / "m" / "train-images-idx3-ubyte.gz", np.zeros((60, 784), np.uint8))
    with pytest.raises(DatasetError, match="expected 3 IDX dimensions"):
        load_dataset("mnist", root=tmp_path / "m")


def test_count_mismatch(tmp_path):
    write_mnist(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(19, np.uint8))
    with pytest.raises(DatasetError, match="holds 20 images but .*t10k-labels.* holds 19"):
        load_dataset("mnist", root=tmp_path)


def test_missing_root_and_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset("mnist", root=tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.gz nor"):
        load_dataset("mnist", root=tmp_path)
    with pytest.raises(ValueError, match="needs root="):
        load_dataset("mnist")
    with pytest.raises(ValueError, match="unknown dataset 'mnst'"):
        load_dataset("mnst", root=tmp_path)
    with pytest.raises(ValueError, match="unknown dataset 'mnst'.*mnist-sample"):
        load_dataset("mnst")  # a wrong name is named before a missing root


def test_gzip_of_raw_equals_raw(tmp_path):
    array = np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5)
    raw = write_idx(tmp_path / "a", array, gz=False)
    (tmp_path / "a.gz").write_bytes(gzip.compress(raw.read_bytes()))
    assert torch.equal(read_idx(raw), read_idx(tmp_path / "a.gz"))
    assert read_idx(raw).tolist() == array.tolist()
