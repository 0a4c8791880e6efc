"""The table of every dataset (nnlab.data.catalog), `nnlab datasets` and `nnlab download NAME`.

Each downloadable dataset is served in its upstream format by the local HTTP server of
test_sources.py on 127.0.0.1: the download, the checksum (or structure) refusal, the resume of a
cut transfer and the offline error are checked through the CLI for every one of them.
"""
import io
import json
import socket
import zipfile
from dataclasses import replace
from functools import partial

import numpy as np
import pytest

from conftest import run_cli
from nnlab.data.catalog import CATALOG, lookup
from nnlab.data.idx import write_idx
from nnlab.data.names import LANGUAGES, fetch_names, load_names
from nnlab.data.sources import cache_root
from nnlab.data.text import load_corpus
from nnlab.data.translation import fetch_eng_fra, pairs_places
from nnlab.data.vision import load_image_dataset
from nnlab.errors import ConfigError
from nnlab.kinds import all_kinds
from nnlab.kinds.translate import TranslateConfig, locate_pairs
from nnlab.recipes import RECIPES
from test_cifar import _batch as cifar_batch
from test_cifar import cifar10_members, write_archive
from test_sources import md5
from test_sources import server as local_server

server = local_server  # the local HTTP server fixture of test_sources.py, on 127.0.0.1

DOWNLOADABLE = ("fashion-mnist", "mnist", "cifar10", "cifar100", "text", "names", "eng-fra")
CUT = 1000  # bytes the server sends before it closes a cut transfer


def idx_files(tmp_path):
    """The four gzip IDX files of an MNIST-style set: 40 training and 20 test images of 28x28."""
    rng = np.random.default_rng(0)
    arrays = {"train-images-idx3-ubyte.gz": rng.integers(0, 256, (40, 28, 28), dtype=np.uint8),
              "train-labels-idx1-ubyte.gz": (np.arange(40) % 10).astype(np.uint8),
              "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
              "t10k-labels-idx1-ubyte.gz": (np.arange(20) % 10).astype(np.uint8)}
    for name, array in arrays.items():
        write_idx(tmp_path / name, array)
    return {name: (tmp_path / name).read_bytes() for name in arrays}


def cifar10_archive(tmp_path):
    return {"cifar-10-python.tar.gz": write_archive(tmp_path / "c10.tar.gz", cifar10_members(n=4)).read_bytes()}


def cifar100_archive(tmp_path):
    members = {"train": cifar_batch(8, 1, b"fine_labels", 100), "test": cifar_batch(4, 2, b"fine_labels", 100),
               "meta": {b"fine_label_names": [f"c{i}".encode() for i in range(100)]}}
    path = write_archive(tmp_path / "c100.tar.gz", members, folder="cifar-100-python")
    return {"cifar-100-python.tar.gz": path.read_bytes()}


SHAKESPEARE = "".join(f"First Citizen:\nBefore we proceed any further, hear me speak {i}.\n\n" for i in range(400))
ENG_FRA = "".join(f"Go {i}.\tVa {i} !\tCC-BY 2.0 (France) Attribution: tatoeba.org #{i}\n" for i in range(300))


def tutorial_zip(languages=LANGUAGES, eng_fra=True):
    """The PyTorch tutorials' data.zip: data/names/<Language>.txt (three names each, one accented)
    and data/eng-fra.txt."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as handle:
        for language in languages:
            handle.writestr(f"data/names/{language}.txt", f"{language}ov\nŚlusàrski\n{language[:3]}son\n")
        if eng_fra:
            handle.writestr("data/eng-fra.txt", ENG_FRA)
    return {"data.zip": buffer.getvalue()}


def upstream_files(name, tmp_path):
    """What the dataset's upstream serves, in its format, by the name it is served under."""
    if name in ("fashion-mnist", "mnist"):
        return idx_files(tmp_path)
    if name == "cifar10":
        return cifar10_archive(tmp_path)
    if name == "cifar100":
        return cifar100_archive(tmp_path)
    if name == "text":
        return {"input.txt": SHAKESPEARE.encode()}
    return tutorial_zip()


def served_from(monkeypatch, name, url, files):
    """Point dataset ``name``'s table entry at ``url``: files with checksums take the md5 of the
    served ``files``; the tutorial's archive keeps its structure check, with thresholds this
    small archive meets."""
    entry = CATALOG[name]
    if entry.spec is not None:
        spec = replace(entry.spec, mirrors=(url,),
                       files=tuple(replace(f, md5=md5(files[f.remote_name])) for f in entry.spec.files))
        entry = replace(entry, spec=spec)
    elif name == "names":
        entry = replace(entry, url=url + "data.zip", unpack=partial(fetch_names, min_names=54))
    else:
        entry = replace(entry, url=url + "data.zip", unpack=partial(fetch_eng_fra, min_pairs=300, min_bytes=1000))
    monkeypatch.setitem(CATALOG, name, entry)
    return entry


def read_back(name):
    """The dataset read by its own reader from where it looks by default; a short proof it is whole."""
    if name in ("fashion-mnist", "mnist", "cifar10", "cifar100"):
        data = load_image_dataset(name, download=False)
        assert data.source.startswith("cache")
        return len(data.train_labels), len(data.test_labels)
    if name == "text":
        text, source = load_corpus()
        assert source.startswith("cache") and text == SHAKESPEARE
        return len(text)
    if name == "names":
        data = load_names()
        assert data.source.startswith("cache") and data.classes == sorted(LANGUAGES)
        return len(data.names)
    path = locate_pairs(TranslateConfig(dataset="eng-fra"), None)
    assert path == cache_root() / "eng-fra" / "eng-fra.txt" and path.read_text(encoding="utf-8") == ENG_FRA
    return len(ENG_FRA.splitlines())


EXPECTED = {"fashion-mnist": (40, 20), "mnist": (40, 20), "cifar10": (20, 4), "cifar100": (8, 4),
            "text": len(SHAKESPEARE), "names": 3 * len(LANGUAGES), "eng-fra": 300}


@pytest.fixture
def upstream(request, server, tmp_path, monkeypatch):
    """Dataset ``request.param`` served in its upstream format by the local server, the table pointed
    at it, and $NNLAB_DATA unset: (its name, the base URL, the server's state, the served files)."""
    url, state = server
    files = upstream_files(request.param, tmp_path)
    state.files.update(files)
    served_from(monkeypatch, request.param, url, files)
    monkeypatch.delenv("NNLAB_DATA", raising=False)
    return request.param, url, state, files


@pytest.mark.parametrize("upstream", DOWNLOADABLE, indirect=True)
def test_download_fetches_into_the_cache_where_the_reader_finds_it(upstream, capsys):
    name, url, state, files = upstream
    code, out, err = run_cli(capsys, "download", name, "--json")
    assert (code, err) == (0, "")
    result = json.loads(out)
    assert result["dataset"] == name and result["downloaded"] and result["check"]
    assert sorted({path for path, _ in state.requests}) == sorted(files)
    assert read_back(name) == EXPECTED[name]
    listed = {row["name"]: row for row in json.loads(run_cli(capsys, "datasets", "--json")[1])}
    assert listed[name]["found"] and listed[name]["location"].startswith("cache")
    # A second download finds the copy intact and asks the server for nothing.
    requests = len(state.requests)
    code, out, _ = run_cli(capsys, "download", name)
    assert code == 0 and "already there" in out and len(state.requests) == requests


@pytest.mark.parametrize("name", DOWNLOADABLE)
def test_a_download_that_fails_its_check_is_refused_and_leaves_nothing(name, server, tmp_path, monkeypatch, capsys):
    url, state = server
    files = upstream_files(name, tmp_path)
    served_from(monkeypatch, name, url, files)
    if name in ("names", "eng-fra"):  # no checksum is published: the archive's structure is checked
        state.files.update(tutorial_zip(languages=LANGUAGES[:-1], eng_fra=False))
        refusal = "expected the tutorial's 18 <Language>.txt files, got 17 (missing Vietnamese)" \
            if name == "names" else "not the tutorial's data.zip"
    else:
        state.files.update({path: data[:-1] + bytes([data[-1] ^ 1]) for path, data in files.items()})
        refusal = "md5 mismatch"
    out_dir = tmp_path / "out"
    code, out, err = run_cli(capsys, "download", name, "--out", str(out_dir))
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith(f"nnlab: error: {name}: download failed: {url}") and refusal in err
    assert "removed" in err or "discarded" in err
    assert [p.name for p in out_dir.iterdir()] == []


@pytest.mark.parametrize("upstream", DOWNLOADABLE, indirect=True)
def test_a_cut_transfer_is_kept_and_the_same_command_resumes_it(upstream, capsys):
    name, url, state, files = upstream
    state.cut_after = CUT
    code, _, err = run_cli(capsys, "download", name)
    assert code == 2 and err.count("\n") == 1
    assert f"interrupted after {CUT} of" in err and "run the same command again to resume" in err
    first = state.requests[0][0]
    directory = cache_root() / (CATALOG[name].spec.name if CATALOG[name].spec else name)
    local = next(f.name for f in CATALOG[name].spec.files if f.remote_name == first) if CATALOG[name].spec else first
    assert (directory / (local + ".part")).read_bytes() == files[first][:CUT]
    assert not (directory / local).exists()

    code, _, err = run_cli(capsys, "download", name)
    assert (code, err) == (0, "")
    assert (first, f"bytes={CUT}-") in state.requests
    assert (directory / local).read_bytes() == files[first] and not (directory / (local + ".part")).exists()
    assert read_back(name) == EXPECTED[name]


def closed_port_url():
    """A URL on 127.0.0.1 where nothing listens: the connection is refused at once, as offline."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


@pytest.mark.parametrize("name", [*DOWNLOADABLE, "tiny-shakespeare", "surnames"])
def test_offline_download_is_one_line_naming_the_url(name, tmp_path, monkeypatch, capsys):
    url = closed_port_url()
    entry = lookup(name)
    if entry.spec is not None:
        monkeypatch.setitem(CATALOG, entry.name, replace(entry, spec=replace(entry.spec, mirrors=(url,))))
    else:
        monkeypatch.setitem(CATALOG, entry.name, replace(entry, url=url + "data.zip"))
    code, out, err = run_cli(capsys, "download", name, "--out", str(tmp_path / "out"))
    assert code == 2 and out == "" and err.count("\n") == 1
    first = CATALOG[entry.name].urls[0]
    assert err.startswith(f"nnlab: error: {entry.name}: download failed: {first}: cannot connect")
    assert "$NNLAB_DATA/" in err  # and where to put the files by hand


def test_the_real_upstreams_are_the_ones_the_issue_names():
    char_rnn = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
    assert lookup("text").urls == [char_rnn]
    assert lookup("text").spec.files[0].md5 == "6fb458f1232090904fb40fe944165e91"
    assert lookup("names").urls == lookup("eng-fra").urls == ["https://download.pytorch.org/tutorial/data.zip"]
    assert "no checksum is published" in lookup("names").check and "no checksum is published" in lookup("eng-fra").check
    assert lookup("surnames") is CATALOG["names"] and lookup("tiny-shakespeare") is CATALOG["text"]


def test_every_recipe_reads_a_dataset_of_the_table():
    # The data a recipe reads when it names none: its kind's default, or a file the user gives.
    by_kind = {"text": ["text"], "names": ["names"], "namegen": ["names"], "series": ["sines", "csv"],
               "perceptron": ["points", "csv"], "textcls": ["csv"], "transfer": ["fashion-mnist", "digits"],
               "tabular": ["csv"]}
    # by_kind is per-kind test data, checked against the tables: one line for each kind of nnlab.kinds
    # with a recipe that names no dataset (a kind missing here, or a line too many, is named).
    no_dataset = {recipe.kind for recipe in RECIPES.values() if not getattr(recipe.config, "dataset", None)}
    assert sorted(no_dataset ^ set(by_kind)) == [], "by_kind: one line for each kind whose recipes name no dataset"
    assert set(by_kind) <= {kind.name for kind in all_kinds()}
    used = set()
    for recipe in RECIPES.values():
        dataset = getattr(recipe.config, "dataset", None)
        used.update([dataset] if dataset else by_kind[recipe.kind])
    assert used - set(CATALOG) == set()
    assert set(CATALOG) - used == {"cifar100", "eng-fra"}  # listed for --set dataset=...; no recipe names them


def test_downloadable_entries_have_urls_and_a_check_and_the_others_say_how_to_get_them(capsys):
    for entry in CATALOG.values():
        assert (entry.origin == "download") == bool(entry.urls) == bool(entry.check), entry.name
        assert entry.how, entry.name
    code, _, err = run_cli(capsys, "download", "eng-fra-5k")
    assert code == 2 and err.count("\n") == 1 and "eng-fra-5k has no upstream download" in err
    assert "$NNLAB_DATA/translation/" in err
    code, _, err = run_cli(capsys, "download", "dates")
    assert code == 2 and "generated by the run" in err
    with pytest.raises(ConfigError, match="unknown dataset 'shakespeare-full'; known datasets: fashion-mnist, "):
        lookup("shakespeare-full")


def test_datasets_lists_every_entry_and_looks_in_data_first(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("NNLAB_DATA", raising=False)
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "tinyshakespeare.txt").write_text(SHAKESPEARE, encoding="utf-8")
    (tmp_path / "names").mkdir()
    (tmp_path / "names" / "Czech.txt").write_text("Novak\n", encoding="utf-8")
    (tmp_path / "eng-fra.txt").write_text(ENG_FRA, encoding="utf-8")
    code, out, _ = run_cli(capsys, "datasets", "--json", "--data", str(tmp_path))
    rows = {row["name"]: row for row in json.loads(out)}
    assert code == 0 and list(rows) == list(CATALOG)
    assert rows["text"]["location"] == f"--data {tmp_path / 'text'}"
    assert rows["names"]["location"] == f"--data {tmp_path / 'names'}"
    assert rows["eng-fra"]["location"] == f"--data {tmp_path / 'eng-fra.txt'}"
    assert rows["mnist"]["location"].startswith("not found: get it with `nnlab download mnist`")
    assert rows["dates"]["found"] and rows["wine"]["location"].startswith("bundled with scikit-learn")
    assert rows["csv"] == {**rows["csv"], "found": False, "location": "give --csv FILE"}
    code, out, _ = run_cli(capsys, "datasets")
    assert code == 0 and sum(line[:1] != " " for line in out.splitlines()) == len(CATALOG)


def test_pairs_places_are_the_translate_readers(tmp_path, monkeypatch):
    monkeypatch.setenv("NNLAB_DATA", str(tmp_path / "data"))
    for name in ("eng-fra", "eng-fra-5k"):
        config = TranslateConfig(dataset=name)
        (env, _), (cache, _), (shared, _) = pairs_places(name)
        assert env == tmp_path / "data" / "translation" / f"{name}.txt"
        for path in (cache, env):  # each place, written from the last to the first, wins over those after it
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(ENG_FRA, encoding="utf-8")
            assert locate_pairs(config, None) == path
            assert str(path) in CATALOG[name].find(CATALOG[name], None)
        env.unlink()
        cache.unlink()
        if shared.is_file():  # the project's shared copy of eng-fra-5k, read-only: only read
            assert locate_pairs(config, None) == shared


def test_names_not_found_says_how_to_download_them(monkeypatch, capsys):
    monkeypatch.delenv("NNLAB_DATA", raising=False)
    code, _, err = run_cli(capsys, "train", "names-rnn", "--dry-run")
    assert code == 2 and "`nnlab download names`" in err and err.count("\n") == 1
