"""Finding and fetching datasets, against a local HTTP server on 127.0.0.1 (no internet needed)."""
import gzip
import hashlib
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from nnlab.data.idx import write_idx
from nnlab.data.sources import DatasetSpec, RemoteFile, cache_root, describe, download, fetch, locate
from nnlab.errors import DataError

NAMES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")


@dataclass
class ServerState:
    """What the test server serves and what it saw."""

    files: dict[str, bytes] = field(default_factory=dict)
    ranges: bool = True
    cut_after: int | None = None  # close the connection after this many body bytes, once
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)


class Handler(BaseHTTPRequestHandler):
    """GET with optional Range support, and a one-shot switch that cuts the body short."""

    def do_GET(self):
        state: ServerState = self.server.state
        name = self.path.lstrip("/")
        requested = self.headers.get("Range")
        state.requests.append((name, requested))
        if name not in state.files:
            self.send_error(404)
            return
        body, start = state.files[name], 0
        if requested and state.ranges:
            start = int(requested.removeprefix("bytes=").split("-")[0])
            if start >= len(body):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if state.cut_after is not None:
            body, state.cut_after = body[:start + state.cut_after], None
            self.close_connection = True
        self.wfile.write(body[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    """A threaded HTTP server on a random local port; yields (base URL, state)."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.state = ServerState()
    # A short poll interval keeps shutdown() from adding half a second to every test.
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", httpd.state
    httpd.shutdown()
    httpd.server_close()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@pytest.fixture
def archives(tmp_path):
    """Two small gzip IDX archives, as bytes by name."""
    rng = np.random.default_rng(0)
    write_idx(tmp_path / NAMES[0], rng.integers(0, 256, size=(40, 28, 28), dtype=np.uint8))
    write_idx(tmp_path / NAMES[1], (np.arange(40) % 10).astype(np.uint8))
    return {name: (tmp_path / name).read_bytes() for name in NAMES}


def make_spec(archives, mirrors=(), system_dirs=()):
    return DatasetSpec(name="tiny", files=tuple(RemoteFile(n, md5(archives[n])) for n in NAMES),
                       mirrors=tuple(mirrors), system_dirs=tuple(str(d) for d in system_dirs),
                       install_hint="apt-get install dataset-tiny")


def populate(directory, archives, decompress=False):
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in archives.items():
        if decompress:
            (directory / name.removesuffix(".gz")).write_bytes(gzip.decompress(data))
        else:
            (directory / name).write_bytes(data)
    return directory


@pytest.fixture
def blob():
    return np.random.default_rng(1).bytes(300_000)


def test_download_writes_the_file_and_verifies_md5(server, blob, tmp_path):
    url, state = server
    state.files["blob.bin"] = blob
    dest = tmp_path / "out" / "blob.bin"
    assert download(url + "blob.bin", dest, md5=md5(blob), progress=False) == dest
    assert dest.read_bytes() == blob
    assert not dest.with_name("blob.bin.part").exists()


def test_md5_mismatch_raises_and_leaves_neither_file_nor_part(server, blob, tmp_path):
    url, state = server
    state.files["blob.bin"] = blob
    dest = tmp_path / "blob.bin"
    with pytest.raises(DataError) as error:
        download(url + "blob.bin", dest, md5="0" * 32, progress=False)
    assert str(error.value) == (f"{url}blob.bin: md5 mismatch: expected {'0' * 32}, got {md5(blob)}; "
                                "the download was discarded")
    assert list(tmp_path.iterdir()) == []


def test_truncated_transfer_keeps_part_and_next_call_resumes_with_range(server, blob, tmp_path):
    url, state = server
    state.files["blob.bin"] = blob
    state.cut_after = 100_000
    dest = tmp_path / "blob.bin"
    with pytest.raises(DataError, match="interrupted after 100000 of 300000 bytes.*run the same command again"):
        download(url + "blob.bin", dest, md5=md5(blob), progress=False)
    part = tmp_path / "blob.bin.part"
    assert part.read_bytes() == blob[:100_000] and not dest.exists()

    download(url + "blob.bin", dest, md5=md5(blob), progress=False)
    assert state.requests[-1] == ("blob.bin", "bytes=100000-")
    assert dest.read_bytes() == blob and not part.exists()


def test_server_without_range_support_restarts_from_zero(server, blob, tmp_path):
    url, state = server
    state.files["blob.bin"] = blob
    state.ranges = False
    (tmp_path / "blob.bin.part").write_bytes(b"stale bytes from an older attempt")
    download(url + "blob.bin", tmp_path / "blob.bin", md5=md5(blob), progress=False)
    assert state.requests[-1][1] is not None  # it did ask to resume
    assert (tmp_path / "blob.bin").read_bytes() == blob


def test_part_as_long_as_the_file_restarts_cleanly(server, blob, tmp_path):
    url, state = server
    state.files["blob.bin"] = blob
    (tmp_path / "blob.bin.part").write_bytes(bytes(len(blob)))
    download(url + "blob.bin", tmp_path / "blob.bin", md5=md5(blob), progress=False)
    assert (tmp_path / "blob.bin").read_bytes() == blob


def test_http_error_names_the_url(server, tmp_path):
    url, _ = server
    with pytest.raises(DataError, match=f"{url}missing.gz: HTTP 404"):
        download(url + "missing.gz", tmp_path / "missing.gz", progress=False)


def test_cache_root_follows_nnlab_cache_else_home(tmp_path, monkeypatch):
    monkeypatch.setenv("NNLAB_CACHE", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c"
    monkeypatch.delenv("NNLAB_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_root() == tmp_path / ".cache" / "nnlab"


@pytest.fixture
def places(tmp_path, monkeypatch, archives):
    """Every place locate looks, each holding the dataset: data arg, $NNLAB_DATA, cache, two system dirs."""
    dirs = {
        "data": populate(tmp_path / "arg", archives),
        "env": populate(tmp_path / "env" / "tiny", archives),
        "cache": populate(cache_root() / "tiny", archives),
        "system1": populate(tmp_path / "sys1", archives),
        "system2": populate(tmp_path / "sys2", archives),
    }
    monkeypatch.setenv("NNLAB_DATA", str(tmp_path / "env"))
    return dirs


def test_locate_order_is_data_then_nnlab_data_then_cache_then_system_dirs(places, archives):
    spec = make_spec(archives, system_dirs=(places["system1"], places["system2"]))
    assert locate(spec, places["data"], download=False) == (places["data"], f"--data {places['data']}")
    expected = [("env", "$NNLAB_DATA/tiny"), ("cache", "cache"), ("system1", "system"), ("system2", "system")]
    for key, label in expected:
        directory, description = locate(spec, download=False)
        assert directory == places[key] and description.startswith(label) and str(places[key]) in description
        for file in directory.iterdir():
            file.unlink()


def test_locate_accepts_decompressed_files(tmp_path, archives):
    directory = populate(tmp_path / "raw", archives, decompress=True)
    assert locate(make_spec(archives), directory, download=False)[0] == directory


def test_data_argument_may_be_the_parent_of_the_dataset_dir(tmp_path, archives):
    populate(tmp_path / "datasets" / "tiny", archives)
    directory, _ = locate(make_spec(archives), tmp_path / "datasets", download=False)
    assert directory == tmp_path / "datasets" / "tiny"


def test_missing_data_dir_error_names_the_missing_files_and_does_not_fall_through(places, archives):
    (places["data"] / NAMES[1]).unlink()
    with pytest.raises(DataError) as error:
        locate(make_spec(archives), places["data"])
    assert str(error.value).startswith(f"--data {places['data']}: missing {NAMES[1]}")
    with pytest.raises(DataError, match=f"--data {places['data'] / 'nope'}: no such directory.*{NAMES[0]}"):
        locate(make_spec(archives), places["data"] / "nope")


def test_locate_downloads_into_the_cache_when_found_nowhere(server, archives, monkeypatch):
    url, state = server
    state.files.update(archives)
    monkeypatch.delenv("NNLAB_DATA", raising=False)
    directory, description = locate(make_spec(archives, mirrors=[url]))
    assert directory == cache_root() / "tiny" and description.startswith(f"downloaded from {url}")
    assert {p.name: p.read_bytes() for p in directory.iterdir()} == archives
    # Found in the cache from now on, without another request.
    requests = len(state.requests)
    assert locate(make_spec(archives, mirrors=[url]))[1].startswith("cache")
    assert len(state.requests) == requests


def test_download_falls_back_to_the_next_mirror(server, archives, tmp_path):
    url, state = server
    state.files.update({f"good/{name}": data for name, data in archives.items()})
    spec = make_spec(archives, mirrors=[url + "bad/", url + "good/"])
    assert fetch(spec, tmp_path / "out", progress=False) == tmp_path / "out"
    assert (tmp_path / "out" / NAMES[0]).read_bytes() == archives[NAMES[0]]


def test_fetch_skips_files_already_present_with_the_right_md5(server, archives, tmp_path):
    url, state = server
    state.files.update(archives)
    populate(tmp_path / "out", {NAMES[0]: archives[NAMES[0]]})
    fetch(make_spec(archives, mirrors=[url]), tmp_path / "out", progress=False)
    assert [name for name, _ in state.requests] == [NAMES[1]]


def test_failed_download_error_lists_every_place_looked(server, archives, tmp_path, monkeypatch):
    url, _ = server  # serves nothing: every file is a 404
    monkeypatch.setenv("NNLAB_DATA", str(tmp_path / "env"))
    system = populate(tmp_path / "sys", {NAMES[0]: archives[NAMES[0]]})
    spec = make_spec(archives, mirrors=[url], system_dirs=(system,))
    with pytest.raises(DataError) as error:
        locate(spec)
    message = str(error.value)
    assert "\n" not in message
    for place in (f"$NNLAB_DATA/tiny ({tmp_path / 'env' / 'tiny'}) (absent)", f"cache {cache_root() / 'tiny'}",
                  f"system {system} (missing {NAMES[1]})", f"download failed: {url}{NAMES[0]}: HTTP 404",
                  "`apt-get install dataset-tiny`", "`nnlab download tiny`"):
        assert place in message


def test_describe_says_where_or_how_to_get_it(places, archives, monkeypatch):
    spec = make_spec(archives)
    assert describe(spec).startswith("$NNLAB_DATA/tiny")
    monkeypatch.delenv("NNLAB_DATA")
    for file in places["cache"].iterdir():
        file.unlink()
    assert describe(spec) == ("not found: get it with `apt-get install dataset-tiny` or `nnlab download tiny`, "
                              "or let the first run download it")
