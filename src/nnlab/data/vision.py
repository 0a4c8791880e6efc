"""Image classification datasets held in memory: MNIST and Fashion-MNIST (IDX format), CIFAR-10/100
(python-version pickles) and a folder of your images.

Each dataset is one registry entry: where to find or fetch its files, its class names and
its normalization statistics. ``load_image_dataset`` returns uint8 tensors ready for
``TensorBatches``. ``nnlab.data.catalog`` lists these beside every other dataset.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from nnlab.data.cifar import CIFAR10_LAYOUT, CIFAR100_LAYOUT, read_cifar
from nnlab.data.folder import channel_stats, read_image_folder, skipped_note
from nnlab.data.idx import cached_idx_pair
from nnlab.data.sources import DatasetSpec, RemoteFile, cache_root, locate
from nnlab.errors import ConfigError

IDX_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


@dataclass(frozen=True)
class ImageDatasetInfo:
    """A registered image dataset: its source spec, classes and per-channel statistics."""

    spec: DatasetSpec
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    description: str
    # Reads the located directory into an ImageDataset; None: the IDX pair layout of MNIST.
    reader: Callable[["ImageDatasetInfo", Path, str], "ImageDataset"] | None = None


@dataclass
class ImageDataset:
    """Train and test splits as uint8 [N, C, H, W] images and int64 [N] labels."""

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str


# Archive md5s are upstream's; raw_sha256 is of the decompressed bytes, which is what
# identifies Fashion-MNIST found on disk (Debian recompressed the archives).
FASHION_MNIST = ImageDatasetInfo(
    spec=DatasetSpec(
        name="fashion-mnist",
        files=(
            RemoteFile("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                       "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
            RemoteFile("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe",
                       "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
            RemoteFile("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79",
                       "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
            RemoteFile("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310",
                       "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
        ),
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        system_dirs=("/usr/share/datasets/fashion-mnist",),
        install_hint="apt-get install dataset-fashion-mnist",
    ),
    classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
             "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    mean=(0.2860,),
    std=(0.3530,),
    description="Zalando's article images: 60,000 train + 10,000 test, 28x28 grey, 10 classes",
)

MNIST = ImageDatasetInfo(
    spec=DatasetSpec(
        name="mnist",
        files=(
            RemoteFile("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
            RemoteFile("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
            RemoteFile("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
            RemoteFile("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
        ),
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/",
                 "http://yann.lecun.com/exdb/mnist/"),
    ),
    classes=tuple(str(d) for d in range(10)),
    mean=(0.1307,),
    std=(0.3081,),
    description="LeCun's handwritten digits: 60,000 train + 10,000 test, 28x28 grey, 10 classes",
)



def _cifar_reader(archive: str, layout: object) -> Callable[[ImageDatasetInfo, Path, str], ImageDataset]:
    """A reader for one CIFAR python-version archive (see nnlab.data.cifar); class names come from it."""

    def read(info: ImageDatasetInfo, directory: Path, source: str) -> ImageDataset:
        path = directory / archive
        parts = read_cifar(path if path.exists() else directory / archive.removesuffix(".gz"), layout)
        (train_x, train_y), (test_x, test_y) = parts["train"], parts["test"]
        return ImageDataset(info.spec.name, torch.from_numpy(train_x), torch.from_numpy(train_y),
                            torch.from_numpy(test_x), torch.from_numpy(test_y), parts["classes"],
                            info.mean, info.std, source)

    return read


CIFAR_MIRRORS = ("https://www.cs.toronto.edu/~kriz/",)
CIFAR10 = ImageDatasetInfo(
    spec=DatasetSpec(name="cifar10", files=(RemoteFile("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),),
                     mirrors=CIFAR_MIRRORS),
    classes=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2470, 0.2435, 0.2616),
    description="Krizhevsky's tiny images: 50,000 train + 10,000 test, 32x32 colour, 10 classes",
    reader=_cifar_reader("cifar-10-python.tar.gz", CIFAR10_LAYOUT),
)
CIFAR100 = ImageDatasetInfo(
    spec=DatasetSpec(name="cifar100", files=(RemoteFile("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85"),),
                     mirrors=CIFAR_MIRRORS),
    classes=(),  # the 100 fine label names are read from the archive's meta file
    mean=(0.5071, 0.4865, 0.4409),
    std=(0.2673, 0.2564, 0.2762),
    description="Krizhevsky's tiny images: 50,000 train + 10,000 test, 32x32 colour, 100 classes",
    reader=_cifar_reader("cifar-100-python.tar.gz", CIFAR100_LAYOUT),
)



def _read_folder(info: ImageDatasetInfo, directory: Path, source: str) -> ImageDataset:
    """An ImageFolder tree (nnlab.data.folder), 64x64 RGB, normalized by its own training images."""
    parts = read_image_folder(directory, on_error="skip")  # a corrupt file is left out, named in the source
    mean, std = channel_stats(parts.train_images)
    return ImageDataset("folder", parts.train_images, parts.train_labels, parts.test_images, parts.test_labels,
                        parts.classes, mean, std, source + skipped_note(parts.skipped))


# The user's own images: no files to look for, --data names the root.
FOLDER = ImageDatasetInfo(spec=DatasetSpec(name="folder", files=(), mirrors=()), classes=(), mean=(), std=(),
                          description="your images: --data DIR with DIR/<class>/*.jpg|png (or train/ and valid/)",
                          reader=_read_folder)

IMAGE_DATASETS: dict[str, ImageDatasetInfo] = {"fashion-mnist": FASHION_MNIST, "mnist": MNIST,
                                               "cifar10": CIFAR10, "cifar100": CIFAR100, "folder": FOLDER}


def dataset_info(name: str) -> ImageDatasetInfo:
    """The registry entry for ``name``, or a ``ConfigError`` listing the known datasets."""
    if name not in IMAGE_DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(IMAGE_DATASETS))}")
    return IMAGE_DATASETS[name]


def _file(directory: Path, name: str) -> Path:
    """The archive, or its decompressed twin when only that one is present."""
    path = directory / name
    return path if path.exists() else directory / name.removesuffix(".gz")


def load_image_dataset(name: str, data: str | Path | None = None, download: bool = True) -> ImageDataset:
    """Find (or fetch) dataset ``name``, decode it (cached as .npy) and return it in memory."""
    info = dataset_info(name)
    if not info.spec.files:  # a dataset of the user's own files
        if data is None:
            raise ConfigError(f"dataset {name!r} reads your own files: give --data DIR")
        return info.reader(info, Path(data).expanduser(), f"--data {data}")
    directory, source = locate(info.spec, data=data, download=download)
    if info.reader is not None:
        return info.reader(info, directory, source)
    cache = cache_root() / "decoded" / name
    splits = []
    for images_name, labels_name in ((IDX_FILES[0], IDX_FILES[1]), (IDX_FILES[2], IDX_FILES[3])):
        images, labels = cached_idx_pair(_file(directory, images_name), _file(directory, labels_name),
                                         len(info.classes), cache)
        splits.append((torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1),  # [N, 1, H, W]
                       torch.from_numpy(labels.astype(np.int64))))
    (train_x, train_y), (test_x, test_y) = splits
    return ImageDataset(name, train_x, train_y, test_x, test_y, info.classes, info.mean, info.std, source)

