"""nnlab serve: the HTTP API through FastAPI's TestClient, bad uploads, micro-batching, reloads, and a real uvicorn."""
import asyncio
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from nnlab.cli import build_parser
from nnlab.config import load_config
from nnlab.data.idx import read_idx
from nnlab.engine.checkpoint import load_checkpoint, save_checkpoint
from nnlab.errors import CheckpointError, ConfigError
from nnlab.kinds.image import predict
from nnlab.commands.serve import MicroBatcher, ServedModel, create_app
from nnlab.recipes import train as train_recipe

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def png(pixels) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def samples(image_run):
    """(png bytes, label) of the run's first 20 test images."""
    data = load_config(image_run / "config.json").data
    images = read_idx(f"{data}/t10k-images-idx3-ubyte.gz")
    labels = read_idx(f"{data}/t10k-labels-idx1-ubyte.gz")
    return [(png(images[i]), int(labels[i])) for i in range(20)]


@pytest.fixture(scope="module")
def client(image_run):
    with TestClient(create_app([image_run], device="cpu", max_bytes=200_000)) as test_client:
        yield test_client


def upload(client, data, name="x.png", content_type="image/png", model="squares", **params):
    return client.post(f"/predict/{model}", files={"file": (name, data, content_type)}, params=params)


def test_health_models_openapi_and_page(client):
    assert client.get("/health").json() == {"status": "ok", "models": 1}
    (info,) = client.get("/models").json()
    assert info["name"] == "squares" and info["classes"] == list(CLASSES) and info["input_shape"] == [1, 28, 28]
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/predict/{model}"]["post"]["requestBody"]["content"]
    assert "file" in body["multipart/form-data"]["schema"]["properties"]
    assert {"/health", "/models", "/models/{model}/reload"} <= schema["paths"].keys()
    page = client.get("/")
    assert page.headers["content-type"].startswith("text/html") and 'id="canvas"' in page.text


def test_predict_returns_the_true_class_and_matches_nnlab_predict(client, samples, tmp_path, image_run):
    data, label = samples[7]
    result = upload(client, data, name="sneaker.png", top_k=3).json()
    assert result["model"] == "squares" and result["file"] == "sneaker.png" and len(result["top"]) == 3
    assert result["top"][0]["class"] == CLASSES[label] == "Sneaker"
    (tmp_path / "sneaker.png").write_bytes(data)
    expected = predict(image_run, [tmp_path / "sneaker.png"], top_k=3)[0]["top"]
    assert [t["class"] for t in result["top"]] == [t["class"] for t in expected]
    for got, want in zip(result["top"], expected):
        assert got["probability"] == pytest.approx(want["probability"], abs=1e-5)


def _bomb() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (5000, 5000)).save(buffer, format="PNG")  # 25 megapixels in a few kilobytes
    return buffer.getvalue()


BAD_UPLOADS = [
    ("not an image", {"files": {"file": ("a.png", b"hello, not a picture", "image/png")}}, 415, "not an image"),
    ("text content type", {"files": {"file": ("a.txt", b"hello", "text/plain")}}, 415, "is not an image"),
    ("empty file", {"files": {"file": ("e.png", b"", "image/png")}}, 400, "file is empty"),
    ("truncated png", {"files": {"file": ("t.png", "TRUNCATED", "image/png")}}, 400, "t.png"),
    ("missing field", {"files": {"other": ("a.png", b"x", "image/png")}}, 422, "field 'file'"),
    ("json body", {"json": {"file": "/etc/passwd"}}, 415, "multipart/form-data"),
    ("malformed multipart", {"content": b"--zz\r\nbroken header line\r\n\r\nabc\r\n--zz--\r\n",
                             "headers": {"content-type": "multipart/form-data; boundary=zz"}}, 400, "malformed multipart"),
    ("declared too large", {"content": b"x" * 300_000,
                            "headers": {"content-type": "multipart/form-data; boundary=zz"}}, 413, "exceeds the limit"),
    ("chunked too large", {"content": iter([b"x" * 50_000] * 6),
                           "headers": {"content-type": "multipart/form-data; boundary=zz"}}, 413, "exceeds the limit"),
    ("decompression bomb", {"files": {"file": ("b.png", "BOMB", "image/png")}}, 413, "5000x5000 pixels"),
    ("top_k zero", {"files": {"file": ("a.png", "GOOD", "image/png")}, "params": {"top_k": 0}}, 422, "top_k"),
]


@pytest.mark.parametrize("case, request_args, status, detail", BAD_UPLOADS, ids=[c[0] for c in BAD_UPLOADS])
def test_bad_requests_get_a_4xx_with_a_clear_message(client, samples, case, request_args, status, detail):
    files = request_args.get("files")
    if files:
        name, data, content_type = next(iter(files.values()))
        data = {"TRUNCATED": samples[0][0][:60], "BOMB": _bomb(), "GOOD": samples[0][0]}.get(data, data)
        request_args = {**request_args, "files": {next(iter(files)): (name, data, content_type)}}
    response = client.post("/predict/squares", **request_args)
    assert response.status_code == status, response.text
    assert detail in json.dumps(response.json()["detail"])
    assert upload(client, samples[1][0]).status_code == 200  # and the server keeps serving


def test_unknown_model_is_a_404_naming_the_served_ones(client, samples):
    response = upload(client, samples[0][0], model="../../etc/passwd")
    assert response.status_code == 404
    assert upload(client, samples[0][0], model="nope").json()["detail"] == \
        "no model named 'nope'; served models: squares"


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(image_run, samples):
    with TestClient(create_app([image_run], device="cpu", batch_wait=0.05)) as test_client:
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(lambda s: upload(test_client, s[0]).json(), samples * 2))
    assert [r["top"][0]["class"] for r in results] == [CLASSES[label] for _, label in samples * 2]
    assert max(r["batch_size"] for r in results) > 1


def test_micro_batcher_runs_simultaneous_submissions_as_one_batch():
    calls = []

    def run(batch):
        calls.append(len(batch))
        return batch * 2

    async def scenario():
        batcher = MicroBatcher(run, max_batch=8, wait=0.01)
        worker = asyncio.create_task(batcher.serve_forever())
        results = await asyncio.gather(*[batcher.submit(torch.tensor([float(i)])) for i in range(11)])
        worker.cancel()
        return results

    results = asyncio.run(scenario())
    assert calls == [8, 3]
    assert [r[0].item() for r in results] == [2.0 * i for i in range(11)]
    assert [r[1] for r in results] == [8] * 8 + [3] * 3


def test_inference_past_the_timeout_is_a_503_and_the_server_stays_up(image_run, samples, monkeypatch):
    original = ServedModel.probabilities

    def slow(self, images):
        time.sleep(0.5)
        return original(self, images)

    monkeypatch.setattr(ServedModel, "probabilities", slow)
    with TestClient(create_app([image_run], device="cpu", inference_timeout=0.1)) as test_client:
        response = upload(test_client, samples[0][0])
        assert response.status_code == 503 and "longer than 0.1 s" in response.json()["detail"]
        assert test_client.get("/health").status_code == 200


class Exploit:
    """Unpickling this would create ``marker``: what a malicious checkpoint does to a careless loader."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def plant_malicious_checkpoint(run_dir, marker):
    state = load_checkpoint(run_dir / "best.pt")
    state["payload"] = Exploit(marker)
    torch.save(state, run_dir / "best.pt")  # a real torch zip archive whose pickle calls os.mkdir


def test_malicious_pickle_as_best_pt_is_refused_at_start(image_run, tmp_path):
    run = shutil.copytree(image_run, tmp_path / "evil")
    plant_malicious_checkpoint(run, tmp_path / "pwned")
    with pytest.raises(CheckpointError, match="refused to load"):
        create_app([run], device="cpu")
    assert not (tmp_path / "pwned").exists()


def test_reload_picks_up_a_replaced_checkpoint_and_refuses_a_malicious_one(image_run, samples, tmp_path):
    run = shutil.copytree(image_run, tmp_path / "squares")
    data, label = samples[2]
    with TestClient(create_app([run], device="cpu")) as test_client:
        assert upload(test_client, data).json()["top"][0]["class"] == CLASSES[label]
        # A new checkpoint whose last layer has classes 2 and 5 swapped: predictions follow.
        state = load_checkpoint(run / "best.pt")
        order = [5 if i == 2 else 2 if i == 5 else i for i in range(10)]
        for key in ("head.5.weight", "head.5.bias"):
            state["model"][key] = state["model"][key][order]
        save_checkpoint(run / "best.pt", state)
        reloaded = test_client.post("/models/squares/reload")
        assert reloaded.status_code == 200 and reloaded.json()["reloads"] == 1
        assert upload(test_client, data).json()["top"][0]["class"] == CLASSES[5]

        plant_malicious_checkpoint(run, tmp_path / "pwned")
        refused = test_client.post("/models/squares/reload")
        assert refused.status_code == 409 and "refused" in refused.json()["detail"]
        assert not (tmp_path / "pwned").exists()
        assert upload(test_client, data).json()["top"][0]["class"] == CLASSES[5]  # still the last good model
        assert test_client.post("/models/nope/reload").status_code == 404


def test_startup_errors_name_the_problem(image_run, tmp_path):
    with pytest.raises(CheckpointError, match="not an nnlab run directory"):
        create_app([tmp_path], device="cpu")
    with pytest.raises(ConfigError, match="two runs are named 'squares'"):
        create_app([image_run, image_run], device="cpu")
    assert build_parser().parse_args(["serve", "r"]).host == "127.0.0.1"


@pytest.fixture(scope="module")
def names_run(tmp_path_factory):
    """A names run that tells 'languages' apart by their endings (-ov, -ini), trained in about a second."""
    root = tmp_path_factory.mktemp("names-data")
    gen = torch.Generator().manual_seed(0)
    stems = ["".join("bcdfgklmnprstvz"[i] for i in row).capitalize()
             for row in torch.randint(15, (400, 4), generator=gen).tolist()]
    (root / "Ovian.txt").write_text("\n".join(s + "ov" for s in stems[:200]), encoding="utf-8")
    (root / "Inian.txt").write_text("\n".join(s + "ini" for s in stems[200:]), encoding="utf-8")
    run = tmp_path_factory.mktemp("names-run") / "names"
    train_recipe("names-rnn", out=run, stream=io.StringIO(),
                     overrides={"data": str(root), "epochs": 4, "hidden_size": 16, "embed": 8, "batch_size": 32,
                                "lr": 1e-2, "threads": 1})
    return run


def test_text_runs_are_served_as_json_beside_image_runs(image_run, names_run, samples):
    from nnlab.kinds import names as names_task
    with TestClient(create_app([image_run, names_run], device="cpu")) as client:
        kinds = {m["name"]: m["kind"] for m in client.get("/models").json()}
        assert kinds == {"squares": "image", "names": "names"}
        response = client.post("/predict/names", json={"inputs": ["Petrov", "Bellini"]}, params={"top_k": 2})
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        assert [r["top"][0]["class"] for r in results] == ["Ovian", "Inian"]
        assert results == [{"input": r["file"], "top": r["top"]}
                           for r in names_task.predict(names_run, ["Petrov", "Bellini"], top_k=2)]
        assert upload(client, samples[0][0]).status_code == 200      # the image model still takes images
        for request_args, status, detail in [
                ({"files": {"file": ("a.png", samples[0][0], "image/png")}}, 415, "classifies text"),
                ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 400, "malformed JSON"),
                ({"json": {"inputs": []}}, 422, "non-empty list of strings"),
                ({"json": {"texts": ["Petrov"]}}, 422, "non-empty list of strings"),
                ({"json": {"inputs": ["Petrov"] * 300}}, 413, "at most 256 inputs"),
                ({"json": {"inputs": ["123"]}}, 422, "no letters the model knows in '123'"),
                ({"content": b"[" * 100_000 + b"]" * 100_000, "headers": {"content-type": "application/json"}},
                 422, "nested too deeply")]:
            response = client.post("/predict/names", **request_args)
            assert response.status_code == status and detail in response.json()["detail"], response.text


def test_runs_serve_cannot_take_are_refused_at_start(tmp_path):
    train_recipe("sine-rnn", out=tmp_path / "sine", stream=io.StringIO(),
                      overrides={"length": 300, "epochs": 1, "hidden_size": 4})
    with pytest.raises(ConfigError, match="is a series run; serve takes: image run, names run, text-classification run"):
        create_app([tmp_path / "sine"], device="cpu")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class StallTimer:
    """Stands in for ``asyncio`` in ``nnlab.commands.serve``: a body read under the upload guard's
    ``timeout`` waits until its bytes come or the test calls ``expire()`` (then it times out), so
    "the stalled client is still waiting once the others are all answered" is an order of events,
    not a race with a clock. Every other use of asyncio is the real one."""

    def __init__(self, timeout: float) -> None:
        self.timeout, self.expired, self.pending, self.lock = timeout, False, [], threading.Lock()

    def __getattr__(self, name):
        return getattr(asyncio, name)

    async def wait_for(self, awaitable, timeout):
        if timeout != self.timeout:
            return await asyncio.wait_for(awaitable, timeout)
        loop = asyncio.get_running_loop()
        expiry = loop.create_future()
        with self.lock:
            if self.expired:
                expiry.set_result(None)
            else:
                self.pending.append((loop, expiry))
        task = asyncio.ensure_future(awaitable)
        await asyncio.wait({task, expiry}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        task.cancel()
        raise asyncio.TimeoutError

    def expire(self) -> None:
        """Every body read waiting now, and every one after, times out."""
        with self.lock:
            self.expired, pending = True, list(self.pending)
        for loop, expiry in pending:
            loop.call_soon_threadsafe(lambda expiry=expiry: expiry.done() or expiry.set_result(None))


def test_slow_client_times_out_without_holding_up_others(image_run, samples, monkeypatch):
    import uvicorn

    import nnlab.commands.serve as serve_module
    timer = StallTimer(3600.0)
    monkeypatch.setattr(serve_module, "asyncio", timer)
    port = free_port()
    app = create_app([image_run], device="cpu", receive_timeout=timer.timeout)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{port}"
        while not server.started:  # no clock of its own: a hang is pytest-timeout's to end
            assert thread.is_alive(), "the server ended before it started"
            time.sleep(0.05)
        slow = socket.create_connection(("127.0.0.1", port))
        slow.sendall(b"POST /predict/squares HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n"
                     b"Content-Type: multipart/form-data; boundary=zz\r\n\r\n--zz\r\n")
        def client(i):
            with httpx.Client(base_url=base) as http:
                return [http.post("/predict/squares", files={"file": ("a.png", samples[(i + j) % 20][0])}).status_code
                        for j in range(5)]

        with ThreadPoolExecutor(16) as pool:  # 80 requests from 16 clients while the slow one hangs
            statuses = [status for result in pool.map(client, range(16)) for status in result]
        assert statuses == [200] * 80
        slow.setblocking(False)
        with pytest.raises(BlockingIOError):  # all answered while the slow one still hangs
            slow.recv(1)
        timer.expire()                        # then its body read times out
        slow.settimeout(15)
        reply = ""
        while "}" not in reply and (chunk := slow.recv(4096)):  # headers and JSON body may come apart
            reply += chunk.decode()
        assert reply.startswith("HTTP/1.1 408") and "stalled for 3600 s" in reply
        slow.close()
    finally:
        server.should_exit = True
        thread.join(10)


def listening_addresses(port):
    """The IPv4 addresses listening on ``port``, from /proc/net/tcp (None where there is none)."""
    table = Path("/proc/net/tcp")
    if not table.is_file():
        return None
    found = set()
    for line in table.read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, local_port = local.split(":")
        if state == "0A" and int(local_port, 16) == port:  # 0A: LISTEN
            found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


def test_cli_serve_on_loopback_reloads_on_sighup_and_stops_cleanly(image_run, samples, tmp_path):
    run = shutil.copytree(image_run, tmp_path / "squares")
    exe = Path(sys.executable).with_name("nnlab")
    proc = subprocess.Popen([str(exe), "serve", str(run), "--port", "0", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready = json.loads(proc.stdout.readline())  # printed once the socket is bound: port 0 got a free port
        assert ready["url"].startswith("http://127.0.0.1:") and ready["models"] == ["squares"]
        base = ready["url"].rstrip("/")
        until(lambda: health_ok(base), proc)
        assert listening_addresses(int(base.rsplit(":", 1)[1])) in ({"127.0.0.1"}, None)
        assert httpx.post(f"{base}/predict/squares", files={"file": ("a.png", samples[6][0])}).json()[
            "top"][0]["class"] == CLASSES[6]
        os.utime(run / "best.pt")  # a checkpoint "replaced" in place
        proc.send_signal(signal.SIGHUP)
        until(lambda: httpx.get(f"{base}/models").json()[0]["reloads"] == 1, proc)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    # uvicorn shuts down gracefully, then re-raises the SIGTERM it caught, as servers conventionally do.
    assert proc.returncode == -signal.SIGTERM and "Traceback" not in err, err
    assert "reloaded squares" in err


def _huge_png_header(width: int, height: int) -> bytes:
    """A PNG claiming ``width`` x ``height`` pixels in its header, with (almost) no image data."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def test_a_header_pillow_itself_refuses_as_a_bomb_is_a_413(client):
    response = client.post("/predict/squares", files={"file": ("huge.png", _huge_png_header(30000, 30000), "image/png")})
    assert response.status_code == 413 and "huge.png" in response.json()["detail"]


class HeldTimers:
    """An event loop whose ``call_later`` only records ``(delay, callback, handle)``: the test fires a
    timer by calling its callback, so what a timeout does is checked by events, not by waiting."""

    def __init__(self, loop) -> None:
        self.loop, self.timers = loop, []

    def __getattr__(self, name):
        return getattr(self.loop, name)

    def call_later(self, delay, callback, *args):
        handle = self.loop.call_later(10**6, callback, *args)  # a real, cancellable handle that never fires
        self.timers.append((delay, callback, handle))
        return handle


class HandTransport:
    """The transport of one loopback connection, for a protocol driven by hand."""

    def __init__(self) -> None:
        self.closed, self.written = False, b""

    def get_extra_info(self, name, default=None):
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 40000)}.get(name, default)

    def write(self, data):
        self.written += data

    def close(self):
        self.closed = True

    def is_closing(self):
        return self.closed


def test_the_header_timer_closes_only_a_connection_whose_headers_never_end():
    """uvicorn's h11 protocol with serve's header timer, driven by hand: the timer is set as a
    connection opens (for the seconds given; nothing is closed at once), closes it when it fires
    before a request's headers are complete, spares one whose request began, and is cancelled when
    the connection goes."""
    import uvicorn
    from uvicorn.server import ServerState

    from nnlab.commands.serve import header_timeout_protocol

    async def app(scope, receive, send):
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
    protocol_class = header_timeout_protocol(2.5)
    config = uvicorn.Config(app, http=protocol_class, log_level="error", lifespan="off")
    real_loop = asyncio.new_event_loop()
    try:
        loop, state = HeldTimers(real_loop), ServerState()
        stalled, served = (protocol_class(config, state, {}, loop) for _ in range(2))
        stalled_transport, served_transport = HandTransport(), HandTransport()
        stalled.connection_made(stalled_transport)
        served.connection_made(served_transport)
        assert [delay for delay, _, _ in loop.timers] == [2.5, 2.5] and not stalled_transport.closed
        stalled.data_received(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        served.data_received(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        real_loop.run_until_complete(asyncio.sleep(0.01))  # the served request's app runs
        assert not stalled_transport.closed and served_transport.written.startswith(b"HTTP/1.1 200")
        header_timers = loop.timers[:2]  # (served's keep-alive timer came after)
        for _, fire, _ in header_timers:
            fire()
        assert stalled_transport.closed and not served_transport.closed
        served.connection_lost(None)
        assert header_timers[1][2].cancelled()
    finally:
        real_loop.close()


def health_ok(base: str) -> bool:
    """``GET base/health`` answered 200 (False while nothing listens yet)."""
    try:
        return httpx.get(f"{base}/health").status_code == 200
    except httpx.TransportError:
        return False


def until(ready, proc) -> None:
    """Poll ``ready()`` until it holds, failing at once if the server process ``proc`` ends first. No
    clock of its own: a hang is pytest-timeout's to end."""
    while not ready():
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)


@pytest.mark.slow
def test_a_client_that_never_finishes_its_headers_is_disconnected(image_run, tmp_path):
    """Through ``nnlab serve --header-timeout``: 20 connections that never end their headers are all
    closed by the server, which goes on serving (when the timer fires, and what it spares, is
    ``test_the_header_timer_closes_only_a_connection_whose_headers_never_end``'s)."""
    import socket as sockets
    exe = Path(sys.executable).with_name("nnlab")
    proc = subprocess.Popen([str(exe), "serve", str(image_run), "--port", "0", "--header-timeout", "1.5", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        base = json.loads(proc.stdout.readline())["url"].rstrip("/")
        host, port = base.removeprefix("http://").rsplit(":", 1)
        until(lambda: health_ok(base), proc)  # the socket is bound before uvicorn listens on it
        slow = [sockets.create_connection((host, int(port)), timeout=60) for _ in range(20)]  # 60 s: a hang guard
        for conn in slow:
            conn.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        assert [conn.recv(1024) for conn in slow] == [b""] * 20  # each closed by the server, unanswered
        assert health_ok(base)
    finally:
        proc.terminate()
        proc.communicate(timeout=20)


def test_onnx_backend_serves_what_torch_serves_and_says_which_graph(image_run, names_run, samples, tmp_path):
    from nnlab.commands.export import export
    run = shutil.copytree(image_run, tmp_path / "squares")
    with TestClient(create_app([run], device="cpu", backend="torch")) as torch_client:
        assert torch_client.get("/models").json()[0]["backend"] == "torch"
        expected = [upload(torch_client, data, top_k=3).json()["top"] for data, _ in samples[:6]]
    with TestClient(create_app([run, names_run], device="cpu")) as client:  # auto: onnx on the CPU
        info = {m["name"]: m for m in client.get("/models").json()}
        assert info["squares"]["backend"] == "onnx" and info["squares"]["onnx_graph"] == "exported at load"
        assert info["names"]["backend"] == "torch"  # onnxruntime serves what export exports: image runs
        for (data, label), want in zip(samples[:6], expected):
            got = upload(client, data, top_k=3).json()["top"]
            assert [t["class"] for t in got] == [t["class"] for t in want]
            for g, w in zip(got, want):
                assert g["probability"] == pytest.approx(w["probability"], abs=1e-5)
    export(run, "onnx")  # RUN/model.onnx, checked: the server takes that file
    with TestClient(create_app([run], device="cpu", backend="onnx")) as client:
        assert client.get("/models").json()[0]["onnx_graph"] == "file"
        assert upload(client, samples[0][0]).json()["top"][0]["class"] == expected[0][0]["class"]
    (run / "model.onnx").write_bytes((run / "model.onnx").read_bytes()[:-1] + b"\0")  # no longer what was checked
    with TestClient(create_app([run], device="cpu", backend="onnx")) as client:
        assert client.get("/models").json()[0]["onnx_graph"] == "exported at load"
    with pytest.raises(ConfigError, match="--backend: expected one of auto, torch, onnx, got .tensorrt."):
        create_app([run], device="cpu", backend="tensorrt")
    assert build_parser().parse_args(["serve", "r"]).backend == "auto"


def test_an_onnx_graph_that_disagrees_with_pytorch_is_refused_at_start(image_run, tmp_path, monkeypatch):
    from nnlab.commands import export as export_module
    run = shutil.copytree(image_run, tmp_path / "squares")
    real = export_module.OnnxPredictor.logits
    monkeypatch.setattr(export_module.OnnxPredictor, "logits", lambda self, x: real(self, x) + 0.01)
    with pytest.raises(CheckpointError, match="does not reproduce the PyTorch model.*--backend torch"):
        create_app([run], device="cpu", backend="onnx")
