"""The CIFAR reader on archives generated in upstream's exact python-version layout."""
import io
import os
import pickle
import tarfile

import numpy as np
import pytest

from nnlab.data.cifar import CIFAR10_LAYOUT, CIFAR100_LAYOUT, read_cifar, safe_loads
from nnlab.data.vision import load_image_dataset
from nnlab.errors import DataError

CLASSES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]


def _batch(n, seed, label_key=b"labels", n_classes=10):
    rng = np.random.default_rng(seed)
    return {b"batch_label": b"training batch", label_key: [int(v) for v in rng.integers(0, n_classes, n)],
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [f"img_{i}.png".encode() for i in range(n)]}


def write_archive(path, members, folder="cifar-10-batches-py"):
    """A tar.gz holding ``folder/NAME`` for each pickled object (protocol 2, as upstream's Python 2 wrote)."""
    with tarfile.open(path, "w:gz") as archive:
        for name, obj in members.items():
            data = obj if isinstance(obj, bytes) else pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def cifar10_members(n=6):
    members = {f"data_batch_{i}": _batch(n, i) for i in range(1, 6)}
    members["test_batch"] = _batch(n, 9)
    members["batches.meta"] = {b"label_names": CLASSES, b"num_cases_per_batch": n, b"num_vis": 3072}
    return members


def test_cifar10_archive_reads_into_planar_rgb_images_and_labels(tmp_path):
    members = cifar10_members()
    parts = read_cifar(write_archive(tmp_path / "cifar-10-python.tar.gz", members), CIFAR10_LAYOUT)
    images, labels = parts["train"]
    assert images.shape == (30, 3, 32, 32) and images.dtype == np.uint8
    first = members["data_batch_1"][b"data"][0]
    # Row layout: 1024 red values, then green, then blue, each 32x32 row-major.
    assert np.array_equal(images[0, 1], first[1024:2048].reshape(32, 32))
    assert labels.tolist()[:6] == members["data_batch_1"][b"labels"]
    assert parts["test"][0].shape == (6, 3, 32, 32)
    assert parts["classes"][0] == "airplane" and len(parts["classes"]) == 10


def test_cifar100_uses_fine_labels(tmp_path):
    members = {"train": _batch(8, 1, b"fine_labels", 100), "test": _batch(4, 2, b"fine_labels", 100),
               "meta": {b"fine_label_names": [f"c{i}".encode() for i in range(100)],
                        b"coarse_label_names": [f"s{i}".encode() for i in range(20)]}}
    path = write_archive(tmp_path / "cifar-100-python.tar.gz", members, folder="cifar-100-python")
    parts = read_cifar(path, CIFAR100_LAYOUT)
    assert parts["train"][1].tolist() == members["train"][b"fine_labels"]
    assert parts["classes"][99] == "c99"


class Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_malicious_pickle_is_refused_naming_the_member(tmp_path):
    members = cifar10_members()
    members["data_batch_3"] = {b"data": Exploit(), b"labels": []}
    path = write_archive(tmp_path / "cifar-10-python.tar.gz", members)
    with pytest.raises(DataError, match=r"data_batch_3: refused to unpickle: it asks for (posix|os)\.system"):
        read_cifar(path, CIFAR10_LAYOUT)


def test_safe_loads_accepts_plain_data_and_refuses_other_classes():
    assert safe_loads(pickle.dumps({"a": [1, 2.5, b"x", None]}, protocol=2), "f") == {"a": [1, 2.5, b"x", None]}
    with pytest.raises(DataError, match="f: refused.*collections.OrderedDict"):
        safe_loads(pickle.dumps(__import__("collections").OrderedDict(a=1)), "f")


@pytest.mark.parametrize("change, message", [
    (lambda m: m["test_batch"].pop(b"labels"), "test_batch: missing key 'labels'"),
    (lambda m: m["data_batch_2"].update({b"data": np.zeros((6, 100), np.uint8)}), r"data_batch_2: 'data' must be .*\(6, 100\)"),
    (lambda m: m["data_batch_2"].update({b"data": np.zeros((6, 3072), np.float32)}), "must be a uint8 array"),
    (lambda m: m["data_batch_4"][b"labels"].__setitem__(0, 10), r"data_batch_4: label 10 out of range, expected 0..9"),
    (lambda m: m["data_batch_5"][b"labels"].pop(), "6 images but 5 labels"),
    (lambda m: m.pop("batches.meta"), "no member cifar-10-batches-py/batches.meta"),
])
def test_bad_archive_contents_name_the_member_and_the_problem(tmp_path, change, message):
    members = cifar10_members()
    change(members)
    with pytest.raises(DataError, match=message):
        read_cifar(write_archive(tmp_path / "c.tar.gz", members), CIFAR10_LAYOUT)


def test_truncated_or_garbage_archive_is_a_data_error(tmp_path):
    path = write_archive(tmp_path / "c.tar.gz", cifar10_members())
    (tmp_path / "cut.tar.gz").write_bytes(path.read_bytes()[:2000])
    with pytest.raises(DataError, match="cut.tar.gz"):
        read_cifar(tmp_path / "cut.tar.gz", CIFAR10_LAYOUT)
    (tmp_path / "junk.tar.gz").write_bytes(b"not an archive at all")
    with pytest.raises(DataError, match="junk.tar.gz: not a readable tar archive"):
        read_cifar(tmp_path / "junk.tar.gz", CIFAR10_LAYOUT)


def test_load_image_dataset_finds_cifar10_under_nnlab_data(tmp_path, monkeypatch):
    (tmp_path / "cifar10").mkdir()
    write_archive(tmp_path / "cifar10" / "cifar-10-python.tar.gz", cifar10_members())
    monkeypatch.setenv("NNLAB_DATA", str(tmp_path))
    data = load_image_dataset("cifar10", download=False)
    assert data.train_images.shape == (30, 3, 32, 32) and data.test_labels.dtype.is_floating_point is False
    assert data.classes[9] == "truck" and len(data.mean) == 3
    assert "NNLAB_DATA" in data.source
