"""The IDX reader and writer on small generated files: round trips, torchvision parity, every corruption."""
import gzip
import hashlib
import os

import numpy as np
import pytest

from nnlab.data import idx
from nnlab.data.idx import cached_idx_pair, read_idx, read_idx_pair, sha256_of_decompressed, write_idx
from nnlab.errors import DataError

ROUND_TRIPS = [
    (np.uint8, (7,)),
    (np.int8, (3, 4)),
    (np.int16, (2, 3, 4)),
    (np.int32, (2, 1, 3, 2)),
    (np.float32, (5, 2)),
    (np.float64, (2, 2, 2)),
]


def sample(dtype, shape, seed=0):
    """Values that use the whole range of ``dtype`` (negative and multi-byte values catch byte-order bugs)."""
    rng = np.random.default_rng(seed)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)
    return (rng.standard_normal(shape) * 1e3).astype(dtype)


def tiny_pair(directory, n=12, n_classes=10, suffix=".gz", seed=0):
    """An images/labels IDX pair like MNIST's, only small."""
    rng = np.random.default_rng(seed)
    images_path = directory / f"train-images-idx3-ubyte{suffix}"
    labels_path = directory / f"train-labels-idx1-ubyte{suffix}"
    write_idx(images_path, rng.integers(0, 256, size=(n, 6, 5), dtype=np.uint8))
    write_idx(labels_path, (np.arange(n) % n_classes).astype(np.uint8))
    return images_path, labels_path


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype, shape", ROUND_TRIPS)
def test_write_then_read_round_trips_every_dtype_and_ndim(tmp_path, dtype, shape, suffix):
    array = sample(dtype, shape)
    path = tmp_path / f"data-idx{len(shape)}{suffix}"
    write_idx(path, array)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.shape == shape
    np.testing.assert_array_equal(back, array)
    assert back.flags.writeable and back.dtype.isnative


@pytest.mark.parametrize("suffix", [".gz", ""])
def test_limit_reads_only_the_first_records_and_checks_them(tmp_path, suffix):
    array = np.arange(7 * 3 * 2, dtype=np.uint8).reshape(7, 3, 2)
    path = tmp_path / f"a-idx3-ubyte{suffix}"
    write_idx(path, array)
    assert np.array_equal(read_idx(path, limit=4), array[:4])
    assert np.array_equal(read_idx(path, limit=100), array)  # more than it holds: all of it
    cut = tmp_path / "cut-idx3-ubyte"
    cut.write_bytes(gzip.decompress(path.read_bytes())[:-10] if suffix else path.read_bytes()[:-10])
    assert np.array_equal(read_idx(cut, limit=5), array[:5])  # the damage lies past the records asked for
    with pytest.raises(DataError, match="truncated IDX file"):
        read_idx(cut, limit=7)


def test_written_header_matches_upstream_magic_numbers(tmp_path):
    write_idx(tmp_path / "images", np.zeros((3, 28, 28), np.uint8))
    write_idx(tmp_path / "labels", np.zeros(3, np.uint8))
    images, labels = (tmp_path / "images").read_bytes(), (tmp_path / "labels").read_bytes()
    assert int.from_bytes(images[:4], "big") == 2051 and int.from_bytes(labels[:4], "big") == 2049
    assert images[4:16] == bytes.fromhex("00000003 0000001c 0000001c") and len(images) == 16 + 3 * 28 * 28


def test_gz_output_is_gzip_and_deterministic(tmp_path):
    array = sample(np.uint8, (4, 4))
    write_idx(tmp_path / "a.gz", array)
    write_idx(tmp_path / "b.gz", array)
    write_idx(tmp_path / "raw", array)
    assert (tmp_path / "a.gz").read_bytes() == (tmp_path / "b.gz").read_bytes()
    assert gzip.decompress((tmp_path / "a.gz").read_bytes()) == (tmp_path / "raw").read_bytes()


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path):
    write_idx(tmp_path / "x.gz", sample(np.uint8, (3,)))
    assert [p.name for p in tmp_path.iterdir()] == ["x.gz"]


def test_write_rejects_dtypes_idx_cannot_store(tmp_path):
    with pytest.raises(ValueError, match="uint64"):
        write_idx(tmp_path / "x", np.zeros(3, np.uint64))
    assert not (tmp_path / "x").exists()


def test_decompressed_file_with_gz_name_still_reads(tmp_path):
    array = sample(np.int16, (3, 2))
    write_idx(tmp_path / "raw", array)
    (tmp_path / "raw").rename(tmp_path / "misnamed.gz")
    np.testing.assert_array_equal(read_idx(tmp_path / "misnamed.gz"), array)


def test_reader_agrees_with_torchvision(tmp_path):
    from torchvision.datasets import mnist  # a dependency: a plain import, never a skip
    images = sample(np.uint8, (9, 28, 28))
    labels = sample(np.uint8, (9,)) % 10
    write_idx(tmp_path / "images", images)
    write_idx(tmp_path / "labels", labels)
    np.testing.assert_array_equal(read_idx(tmp_path / "images"), mnist.read_image_file(str(tmp_path / "images")).numpy())
    np.testing.assert_array_equal(read_idx(tmp_path / "labels"), mnist.read_label_file(str(tmp_path / "labels")).numpy())
    for dtype, shape in ROUND_TRIPS:
        shape = shape[-3:]  # torchvision reads at most 3 dimensions
        path = tmp_path / f"x-{np.dtype(dtype).name}"
        write_idx(path, sample(dtype, shape))
        reference = mnist.read_sn3_pascalvincent_tensor(str(path), strict=True).numpy()
        assert read_idx(path).dtype == reference.dtype
        np.testing.assert_array_equal(read_idx(path), reference)


def test_truncated_idx_file_names_the_file(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    write_idx(path, np.zeros((10, 4, 4), np.uint8))
    path.write_bytes(path.read_bytes()[:16 + 100])
    with pytest.raises(DataError) as error:
        read_idx(path)
    assert str(error.value) == (f"{path}: truncated IDX file: expected 160 data bytes for shape (10, 4, 4) "
                                "after the 16-byte header, found 100")


def test_truncated_gz_idx_file_names_the_file(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    write_idx(path, sample(np.uint8, (10, 8, 8)))
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match="corrupt gzip data") as error:
        read_idx(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_trailing_bytes_are_an_error_naming_the_file(tmp_path):
    path = tmp_path / "labels.gz"
    write_idx(path, np.zeros(5, np.uint8))
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes()) + b"junk"))
    with pytest.raises(DataError) as error:
        read_idx(path)
    assert str(error.value).startswith(f"{path}: 4 trailing bytes after the IDX data")
    assert "expected exactly 5 data bytes for shape (5,)" in str(error.value)


@pytest.mark.parametrize("header, problem", [
    (b"\x01\x02\x08\x01", "not an IDX file: magic number starts with bytes 01 02 08 01"),
    (b"\x00\x00\x07\x01", "unknown IDX data type code 0x07, expected one of 0x08"),
    (b"\x00\x00\x08\x00", "IDX header declares 0 dimensions, expected 1 to"),
    (b"\x00\x00\x08\x03\x00\x00", "truncated IDX header: expected 12 bytes of dimensions for 3 dimensions, found 2"),
    (b"\x00\x00", "not an IDX file: expected a 4-byte magic number, found 2 bytes"),
])
def test_bad_header_is_an_error_naming_the_file_and_problem(tmp_path, header, problem):
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(header)
    with pytest.raises(DataError) as error:
        read_idx(path)
    assert str(error.value).startswith(f"{path}: {problem}")


def test_corrupt_gzip_names_the_file(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    write_idx(path, sample(np.uint8, (20, 8, 8)))
    data = bytearray(path.read_bytes())
    data[30:60] = bytes(30)  # inside the deflate stream, past the 10-byte gzip header
    path.write_bytes(bytes(data))
    with pytest.raises(DataError) as error:
        read_idx(path)
    assert str(error.value).startswith(f"{path}: corrupt gzip data")


def test_gzip_crc_mismatch_is_detected(tmp_path):
    path = tmp_path / "labels.gz"
    write_idx(path, np.arange(50, dtype=np.uint8))
    data = bytearray(path.read_bytes())
    data[-8] ^= 0xFF  # the CRC32 in the gzip trailer
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="corrupt gzip data.*CRC"):
        read_idx(path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match=f"{tmp_path / 'nope.gz'}: no such file"):
        read_idx(tmp_path / "nope.gz")


def test_pair_reads_images_and_labels(tmp_path):
    images_path, labels_path = tiny_pair(tmp_path)
    images, labels = read_idx_pair(images_path, labels_path, 10)
    assert images.shape == (12, 6, 5) and images.dtype == np.uint8
    np.testing.assert_array_equal(labels, np.arange(12) % 10)


@pytest.mark.parametrize("labels, message", [
    ([0, 1, 2, 9, 4, 5, 6, 7, 8, 11, 10, 3],
     "{labels}: label 11 at index 9 is out of range (2 such labels): expected labels in [0, 10)"),
    ([0] * 11, "{images} has 12 images but {labels} has 11 labels: expected one label per image"),
], ids=["label_out_of_range", "count_mismatch"])
def test_bad_labels_are_an_error_naming_the_files(tmp_path, labels, message):
    images_path, labels_path = tiny_pair(tmp_path)
    write_idx(labels_path, np.array(labels, np.uint8))
    with pytest.raises(DataError) as error:
        read_idx_pair(images_path, labels_path, 10)
    assert str(error.value) == message.format(images=images_path, labels=labels_path)


def test_wrong_image_dtype_or_shape_names_the_images_file(tmp_path):
    images_path, labels_path = tiny_pair(tmp_path)
    write_idx(images_path, np.zeros((12, 6, 5), np.int16))
    with pytest.raises(DataError, match=f"{images_path}: expected uint8 images of shape \\(N, H, W\\), found int16"):
        read_idx_pair(images_path, labels_path, 10)
    write_idx(images_path, np.zeros((12, 30), np.uint8))
    with pytest.raises(DataError, match="found uint8 values of shape \\(12, 30\\)"):
        read_idx_pair(images_path, labels_path, 10)


def test_cache_serves_the_second_call_without_decoding(tmp_path, monkeypatch):
    images_path, labels_path = tiny_pair(tmp_path)
    cache = tmp_path / "cache"
    first = cached_idx_pair(images_path, labels_path, 10, cache)
    assert len(list(cache.glob("*.npy"))) == 2

    def fail(path):
        raise AssertionError(f"decoded {path} again instead of using the cache")

    monkeypatch.setattr(idx, "read_idx", fail)
    second = cached_idx_pair(images_path, labels_path, 10, cache)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype


def test_cache_is_invalidated_when_the_source_changes(tmp_path):
    images_path, labels_path = tiny_pair(tmp_path)
    cache = tmp_path / "cache"
    cached_idx_pair(images_path, labels_path, 10, cache)
    tiny_pair(tmp_path, n=8, seed=1)
    stat = images_path.stat()
    os.utime(images_path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    images, labels = cached_idx_pair(images_path, labels_path, 10, cache)
    expected_images, expected_labels = read_idx_pair(images_path, labels_path, 10)
    assert images.shape == (8, 6, 5)
    np.testing.assert_array_equal(images, expected_images)
    assert len(list(cache.glob("*.npy"))) == 2  # the stale entry was removed


def test_corrupt_cache_file_is_ignored_and_rewritten(tmp_path):
    images_path, labels_path = tiny_pair(tmp_path)
    cache = tmp_path / "cache"
    expected_images, _ = cached_idx_pair(images_path, labels_path, 10, cache)
    [images_npy] = cache.glob("*.images.npy")
    images_npy.write_bytes(images_npy.read_bytes()[:40])
    images, _ = cached_idx_pair(images_path, labels_path, 10, cache)
    np.testing.assert_array_equal(images, expected_images)
    np.testing.assert_array_equal(np.load(images_npy), expected_images)


def test_unwritable_cache_dir_still_decodes(tmp_path):
    images_path, labels_path = tiny_pair(tmp_path)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    images, labels = cached_idx_pair(images_path, labels_path, 10, blocker / "cache")
    assert images.shape == (12, 6, 5) and len(labels) == 12


def test_cached_pair_still_validates_and_names_the_file(tmp_path):
    images_path, labels_path = tiny_pair(tmp_path, n_classes=10)
    with pytest.raises(DataError, match=f"{labels_path}: label 5 at index 5 is out of range"):
        cached_idx_pair(images_path, labels_path, 5, tmp_path / "cache")
    with pytest.raises(DataError, match="no such file"):
        cached_idx_pair(tmp_path / "missing.gz", labels_path, 10, tmp_path / "cache")


def test_sha256_of_decompressed_is_the_same_for_raw_and_gz(tmp_path):
    array = sample(np.uint8, (6, 7, 7))
    write_idx(tmp_path / "x", array)
    write_idx(tmp_path / "x.gz", array)
    raw_digest = hashlib.sha256((tmp_path / "x").read_bytes()).hexdigest()
    assert sha256_of_decompressed(tmp_path / "x") == raw_digest
    assert sha256_of_decompressed(tmp_path / "x.gz") == raw_digest
