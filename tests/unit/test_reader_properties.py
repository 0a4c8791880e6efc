"""Property tests: random corruptions of valid dataset files only ever raise nnlab's own errors.

Each test writes one valid file (or folder) in the exact format its reader expects, checks that it
reads, then lets Hypothesis truncate it, flip bytes in it and insert bytes into it. Whatever the
damage, the reader must either return normally or raise an ``NnlabError``; any other exception
escapes and fails the test (with the shrunk corruption that caused it).
"""
import io
import os
import pickle
import tarfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nnlab.data.cifar import CIFAR10_LAYOUT, read_cifar, safe_loads
from nnlab.data.idx import read_idx, write_idx
from nnlab.data.names import load_names
from nnlab.data.tabular import read_csv
from nnlab.data.text import read_text
from nnlab.errors import DataError, NnlabError

from test_cifar import cifar10_members, write_archive

# Fixed examples by default (reproducible, ~10 s in all); NNLAB_PROPERTY_EXAMPLES=N explores N random ones instead.
EXAMPLES = int(os.environ.get("NNLAB_PROPERTY_EXAMPLES", 150))
PROPERTY = settings(max_examples=EXAMPLES, deadline=None, derandomize="NNLAB_PROPERTY_EXAMPLES" not in os.environ,
                    suppress_health_check=[HealthCheck.too_slow])


@st.composite
def corruptions(draw, max_edits=3):
    """A list of 1..max_edits edits: ("truncate", fraction), ("flip", fraction, mask), ("insert", fraction, bytes)."""
    edit = st.one_of(
        st.tuples(st.just("truncate"), st.floats(0, 1)),
        st.tuples(st.just("flip"), st.floats(0, 1), st.integers(1, 255)),
        st.tuples(st.just("insert"), st.floats(0, 1), st.binary(min_size=1, max_size=16)),
    )
    return draw(st.lists(edit, min_size=1, max_size=max_edits))


def corrupt(data: bytes, edits) -> bytes:
    """``data`` with each edit applied in turn; positions are fractions of the current length."""
    buffer = bytearray(data)
    for edit in edits:
        kind, where = edit[0], edit[1]
        at = min(int(where * len(buffer)), max(len(buffer) - 1, 0))
        if kind == "truncate":
            del buffer[int(where * len(buffer)):]
        elif kind == "flip" and buffer:
            buffer[at] ^= edit[2]
        elif kind == "insert":
            buffer[at:at] = edit[2]
    return bytes(buffer)


def only_nnlab_errors(read, *args):
    """Call the reader; return ``"ok"`` or the NnlabError subclass name. Anything else propagates."""
    try:
        read(*args)
    except NnlabError as error:
        assert str(error).strip(), f"an empty message: {error!r}"
        return type(error).__name__
    return "ok"


class Bundle(tuple):
    """A fixture value whose repr stays short in Hypothesis's failure reports."""

    def __repr__(self):
        return "<fixture>"


def test_corrupt_applies_each_kind_of_edit():
    assert corrupt(b"abcdef", [("truncate", 0.5)]) == b"abc"
    assert corrupt(b"abcdef", [("flip", 0.0, 0x01)]) == b"`bcdef"
    assert corrupt(b"abcdef", [("insert", 1.0, b"XY")]) == b"abcdeXYf"
    assert corrupt(b"", [("flip", 0.3, 7), ("insert", 0.5, b"z")]) == b"z"


# --- IDX -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def idx_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("idx")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 6, 7), dtype=np.uint8)
    floats = rng.standard_normal((3, 4)).astype(np.float32)
    write_idx(root / "images-idx3-ubyte", images)
    write_idx(root / "images-idx3-ubyte.gz", images)
    write_idx(root / "floats-idx2.gz", floats)
    files = {name: (root / name).read_bytes() for name in ("images-idx3-ubyte", "images-idx3-ubyte.gz", "floats-idx2.gz")}
    assert np.array_equal(read_idx(root / "images-idx3-ubyte"), images)
    assert np.array_equal(read_idx(root / "images-idx3-ubyte.gz"), images)
    assert np.array_equal(read_idx(root / "floats-idx2.gz"), floats)
    return root / "work", files


@PROPERTY
@given(name=st.sampled_from(["images-idx3-ubyte", "images-idx3-ubyte.gz", "floats-idx2.gz"]), edits=corruptions())
def test_corrupt_idx_raises_only_data_errors(idx_files, name, edits):
    work, files = idx_files
    work.mkdir(exist_ok=True)
    path = work / name
    path.write_bytes(corrupt(files[name], edits))
    only_nnlab_errors(read_idx, path)


@PROPERTY
@given(name=st.sampled_from(["images-idx3-ubyte", "images-idx3-ubyte.gz", "floats-idx2.gz"]),
       keep=st.floats(0, 1, exclude_max=True))
def test_truncated_idx_is_always_refused(idx_files, name, keep):
    """IDX checks the exact payload size (and gzip its length and CRC), so every truncation is a DataError."""
    work, files = idx_files
    work.mkdir(exist_ok=True)
    path = work / name
    path.write_bytes(files[name][: int(keep * len(files[name]))])
    with pytest.raises(DataError, match=str(path)):
        read_idx(path)


# --- CSV -------------------------------------------------------------------------------------------------------

CSV_TEXT = ("sepal length,sepal width,colour,species\n"
            "5.1,3.5,red,setosa\n"
            "4.9,3.0,\"blue, dark\",setosa\n"
            "\n"
            "6.3,3.3,green,\"vir\"\"ginica\"\n"
            "5.8,2.7,red,versicolor\n")


@pytest.fixture(scope="module")
def csv_work(tmp_path_factory):
    path = tmp_path_factory.mktemp("csv") / "table.csv"
    path.write_text(CSV_TEXT, encoding="utf-8")
    table = read_csv(path)
    assert table.columns[2] == "colour" and table.rows[1][2] == "blue, dark" and len(table.rows) == 4
    return path


@PROPERTY
@given(edits=corruptions(), bom=st.booleans())
def test_corrupt_csv_raises_only_data_errors(csv_work, edits, bom):
    data = CSV_TEXT.encode("utf-8")
    csv_work.write_bytes((b"\xef\xbb\xbf" if bom else b"") + corrupt(data, edits))
    only_nnlab_errors(read_csv, csv_work)


# --- names folders ---------------------------------------------------------------------------------------------

NAMES = {"Czech.txt": "Novak\nDvorak\nSvoboda\n", "Italian.txt": "Rossi\nBianchi\n\nŚlusàrski\n",
         "Spanish.txt": "Garcia\nLopez\nMartinez\n"}


@pytest.fixture(scope="module")
def names_work(tmp_path_factory):
    root = tmp_path_factory.mktemp("names")
    for name, text in NAMES.items():
        (root / name).write_text(text, encoding="utf-8")
    data = load_names(root)
    assert data.classes == ["Czech", "Italian", "Spanish"] and "Slusarski" in data.names
    return root


@PROPERTY
@given(name=st.sampled_from(sorted(NAMES)), edits=corruptions())
def test_corrupt_names_folder_raises_only_data_errors(names_work, name, edits):
    for other, text in NAMES.items():
        (names_work / other).write_text(text, encoding="utf-8")
    (names_work / name).write_bytes(corrupt(NAMES[name].encode("utf-8"), edits))
    only_nnlab_errors(load_names, names_work)


# --- text ------------------------------------------------------------------------------------------------------

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak. Ünïcödé — ok.\n"


@pytest.fixture(scope="module")
def text_work(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "input.txt"
    path.write_text(TEXT, encoding="utf-8")
    assert read_text(path) == TEXT
    return path


@PROPERTY
@given(edits=corruptions())
def test_corrupt_text_raises_only_data_errors(text_work, edits):
    text_work.write_bytes(corrupt(TEXT.encode("utf-8"), edits))
    only_nnlab_errors(read_text, text_work)


# --- CIFAR-10 python pickles -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cifar_work(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    members = cifar10_members(n=2)
    gz = (write_archive(root / "cifar-10-python.tar.gz", members)).read_bytes()
    plain = io.BytesIO()
    with tarfile.open(fileobj=plain, mode="w") as archive:
        for name, obj in members.items():
            data = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    (root / "plain.tar").write_bytes(plain.getvalue())
    for name in ("cifar-10-python.tar.gz", "plain.tar"):
        parts = read_cifar(root / name, CIFAR10_LAYOUT)
        assert parts["train"][0].shape == (10, 3, 32, 32) and parts["classes"][0] == "airplane"
    return Bundle((root / "work", members, {"gz": gz, "tar": plain.getvalue()}))


@PROPERTY
@given(which=st.sampled_from(["gz", "tar"]), edits=corruptions())
def test_corrupt_cifar_archive_raises_only_data_errors(cifar_work, which, edits):
    work, _, archives = cifar_work
    work.mkdir(exist_ok=True)
    path = work / f"cifar.{which}"
    path.write_bytes(corrupt(archives[which], edits))
    only_nnlab_errors(read_cifar, path, CIFAR10_LAYOUT)


@PROPERTY
@given(member=st.sampled_from(["test_batch", "batches.meta"]), edits=corruptions())
def test_corrupt_cifar_pickle_in_a_valid_archive_raises_only_data_errors(cifar_work, member, edits):
    """The archive is intact; one pickle inside it is damaged, so the unpickler and the checks see the damage."""
    work, members, _ = cifar_work
    work.mkdir(exist_ok=True)
    damaged = dict(members)
    damaged[member] = corrupt(pickle.dumps(members[member], protocol=2), edits)
    path = write_archive(work / "cifar-10-python.tar.gz", damaged)
    only_nnlab_errors(read_cifar, path, CIFAR10_LAYOUT)


@PROPERTY
@given(edits=corruptions(max_edits=4), protocol=st.sampled_from([2, 4]))
def test_corrupt_pickle_bytes_raise_only_data_errors(cifar_work, edits, protocol):
    """safe_loads straight on damaged bytes of a batch and of the meta dict (the fast path for many examples)."""
    _, members, _ = cifar_work
    for member in ("test_batch", "batches.meta"):
        only_nnlab_errors(safe_loads, corrupt(pickle.dumps(members[member], protocol=protocol), edits), member)
