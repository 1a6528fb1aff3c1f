"""Where each dataset comes from: official URLs and MD5s, and what a complete copy holds.

MD5s are the ones the datasets' own pages (or, where a page gives none, torchvision and
fastai, which pin the same files) publish for the official files. Sizes are the bytes the
official servers send (MNIST's measured on the real files; the others as the servers'
Content-Length in public download logs); Imagenette's is not pinned, so its download is
capped by the server's Content-Length instead.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SOURCES", "RemoteFile", "Source"]


@dataclass(frozen=True)
class RemoteFile:
    """One file to download into the dataset root (archives are extracted there)."""

    name: str
    md5: str
    urls: tuple[str, ...]
    extract: bool = False
    optional: bool = False  # fetched only on request (SVHN's 1.3 GB extra set)
    size: int | None = None  # bytes of the official file: downloads stop a little past it


@dataclass(frozen=True)
class Source:
    name: str
    homepage: str
    files: tuple[RemoteFile, ...] = ()
    contents: tuple[tuple[str, str], ...] = ()  # (path under root, md5) after extraction
    counts: tuple[tuple[str, int], ...] = ()  # (split, images) a complete copy holds
    manual: str = ""  # why and how to fetch it by hand, when it cannot be downloaded


def _idx(base_urls: tuple[str, ...], md5s: tuple[str, str, str, str],
         sizes: tuple[int, int, int, int]) -> tuple[RemoteFile, ...]:
    names = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
    return tuple(
        RemoteFile(name, md5, tuple(base + name for base in base_urls), size=size)
        for name, md5, size in zip(names, md5s, sizes, strict=True)
    )


_IDX_COUNTS = (("train", 60_000), ("test", 10_000))

SOURCES: dict[str, Source] = {
    "mnist": Source(
        "mnist", "http://yann.lecun.com/exdb/mnist/",
        # LeCun's page first; PyTorch's mirror of the same files when it refuses (it often does).
        _idx(("http://yann.lecun.com/exdb/mnist/", "https://ossci-datasets.s3.amazonaws.com/mnist/"),
             ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
              "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c"),
             (9_912_422, 28_881, 1_648_877, 4_542)),
        counts=_IDX_COUNTS,
    ),
    "fashion-mnist": Source(
        "fashion-mnist", "https://github.com/zalandoresearch/fashion-mnist",
        _idx(("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
             ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
              "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310"),
             (26_421_880, 29_515, 4_422_102, 5_148)),
        counts=_IDX_COUNTS,
    ),
    "kmnist": Source(
        "kmnist", "https://github.com/rois-codh/kmnist",
        _idx(("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
             ("bdb82020997e1d708af4cf47b453dcf7", "e144d726b3acfaa3e44228e80efcd344",
              "5c965bf0a639b31b8f53240b1b52f4d7", "7320c461ea6c1c855c0b718fb2a4b134"),
             (18_165_135, 29_497, 3_041_136, 5_120)),
        counts=_IDX_COUNTS,
    ),
    "cifar10": Source(
        "cifar10", "https://www.cs.toronto.edu/~kriz/cifar.html",
        (RemoteFile("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
                    ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",), extract=True,
                    size=170_498_071),),
        contents=(
            ("cifar-10-batches-py/data_batch_1", "c99cafc152244af753f735de768cd75f"),
            ("cifar-10-batches-py/data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
            ("cifar-10-batches-py/data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
            ("cifar-10-batches-py/data_batch_4", "634d18415352ddfa80567beed471001a"),
            ("cifar-10-batches-py/data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb"),
            ("cifar-10-batches-py/test_batch", "40351d587109b95175f43aff81a1287e"),
            ("cifar-10-batches-py/batches.meta", "5ff9c542aee3614f3951f8cda6e48888"),
        ),
        counts=(("train", 50_000), ("test", 10_000)),
    ),
    "cifar100": Source(
        "cifar100", "https://www.cs.toronto.edu/~kriz/cifar.html",
        (RemoteFile("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85",
                    ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",), extract=True,
                    size=169_001_437),),
        contents=(
            ("cifar-100-python/train", "16019d7e3df5f24257cddd939b257f8d"),
            ("cifar-100-python/test", "f0ef6b0ae62326f3e7ffdfab6717acfc"),
            ("cifar-100-python/meta", "7973b15100ade9c7d40fb424638fde48"),
        ),
        counts=(("train", 50_000), ("test", 10_000)),
    ),
    "svhn": Source(
        "svhn", "http://ufldl.stanford.edu/housenumbers/",
        (
            RemoteFile("train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373",
                       ("http://ufldl.stanford.edu/housenumbers/train_32x32.mat",),
                       size=182_040_794),
            RemoteFile("test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3",
                       ("http://ufldl.stanford.edu/housenumbers/test_32x32.mat",),
                       size=64_275_384),
            RemoteFile("extra_32x32.mat", "a93ce644f1a588dc4d68dda5feec44a7",
                       ("http://ufldl.stanford.edu/housenumbers/extra_32x32.mat",), optional=True,
                       size=1_329_278_602),
        ),
        counts=(("train", 73_257), ("test", 26_032)),
    ),
    "imagenette": Source(
        "imagenette", "https://github.com/fastai/imagenette",
        # the 160-pixel version (shorter side 160): the size that trains on a CPU
        (RemoteFile("imagenette2-160.tgz", "e793b78cc4c9e9a4ccc0c1155377a412",
                    ("https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-160.tgz",),
                    extract=True),),
        counts=(("train", 9_469), ("val", 3_925)),
    ),
    "imagenet": Source(
        "imagenet", "https://image-net.org/challenges/LSVRC/2012/",
        contents=(),
        counts=(("train", 1_281_167), ("val", 50_000)),
        manual=(
            "ImageNet (ILSVRC-2012) cannot be downloaded without an account: register at "
            "image-net.org, fetch ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar, and "
            "unpack them into ROOT/train/<wnid>/ and ROOT/val/<wnid>/"
        ),
    ),
}

# The ImageNet archives' MD5s, checked by `cnnlab data verify imagenet` when they are present.
IMAGENET_ARCHIVES = (
    ("ILSVRC2012_img_train.tar", "1d675b47d978889d74fa0da5fadfb00e"),
    ("ILSVRC2012_img_val.tar", "29b22e2961454d5413ddabcf34fc5622"),
    ("ILSVRC2012_devkit_t12.tar.gz", "fa75699e90414af021442c21a62c3abe"),
)
