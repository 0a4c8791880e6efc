"""An HTTP server for trained runs, the studio: FastAPI on uvicorn, micro-batched (images), loopback by default.

``create_app`` loads each run's best checkpoint (weights only: ``load_checkpoint`` refuses any
pickle that would run code) and serves ``GET /health``, ``GET /models`` (each model with what
its kind can do, from the table of kinds), ``POST /predict/{model}`` (multipart field ``file``
for an image run; a JSON body ``{"inputs": [...]}`` of names or texts for a names or
text-classification run, with each token's attention weight where the run pools by attention),
``POST /models/{model}/reload``, the OpenAPI schema at ``/docs`` and ``/openapi.json``, and the
studio page at ``/``. What the parts of the server share (the served model, its HTTP error, the
request readers) is ``nnlab.commands.served``. ``nnlab.commands.studio`` adds Grad-CAM, sampling and translation;
``nnlab.commands.studio_runs`` the runs under ``--runs DIR`` (the ``nnlab runs`` table, one run's
curves and scores, two runs compared). No endpoint takes a file path from the request: models
are named by their run directory's name and looked up in the table built at start-up, runs by
their name in the runs folder.

Concurrent requests for one model are stacked into one forward pass (``MicroBatcher``: the
first request waits ``batch_wait`` seconds for company). Uploads are guarded in layers: a
body-size limit (checked against Content-Length, then counted as the body streams in), a
timeout between body chunks for slow clients, a content-type check, a pixel-count limit read
from the image header before decoding, and a timeout on the inference itself. Every rejection
is a 4xx (503 when the server is overloaded) with a one-line ``detail``.
"""
from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Literal

import torch
from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nnlab.engine.learner import resolve_device
from nnlab.engine.metrics import ranked
from nnlab.commands import studio, studio_runs
from nnlab.commands.served import (BACKENDS, MAX_TEXT_CHARS, MAX_TEXTS, MAX_UPLOAD_BYTES, ServedModel,
                                   UploadRejected, read_image, read_json, text_inputs, wrong_kind)
from nnlab.errors import ConfigError, DataError, NnlabError

MAX_BATCH = 64
BATCH_WAIT_S = 0.002
RECEIVE_TIMEOUT_S = 10.0     # longest pause between two chunks of a request body
INFERENCE_TIMEOUT_S = 30.0
MAX_QUEUE = 1024             # requests waiting per model before the server answers 503
# The page's script and style come from this server only (no inline code, no CDN), requests go to
# this server only, previews and Grad-CAM maps are shown from blob: URLs.
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
            "frame-ancestors 'none'")




class UploadGuard:
    """ASGI middleware: refuse bodies over ``max_bytes`` and bodies that stall for ``timeout`` seconds.

    A declared Content-Length over the limit is refused before a byte is read; otherwise the
    body is counted as it streams in, so a chunked or lying client cannot get past the limit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, timeout: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length", b"").decode("latin-1")
        if length.isdigit() and int(length) > self.max_bytes:
            response = JSONResponse({"detail": f"request body of {int(length)} bytes exceeds the limit of "
                                               f"{self.max_bytes} bytes"}, status_code=413)
            return await response(scope, receive, send)
        received = 0

        async def guarded_receive() -> Message:
            nonlocal received
            try:
                message = await asyncio.wait_for(receive(), self.timeout)
            except asyncio.TimeoutError:
                raise UploadRejected(408, f"request body stalled for {self.timeout:g} s; send it faster") from None
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise UploadRejected(413, f"request body exceeds the limit of {self.max_bytes} bytes")
            return message

        await self.app(scope, guarded_receive, send)










class MicroBatcher:
    """Stack concurrent requests into one call of ``run``: the first waits ``wait`` s for others.

    ``run`` maps a stacked batch to per-row results and runs in a worker thread, so the event
    loop keeps accepting requests (which then form the next batch) while the model computes.
    """

    def __init__(self, run: Callable[[torch.Tensor], torch.Tensor], max_batch: int = MAX_BATCH,
                 wait: float = BATCH_WAIT_S, max_queue: int = MAX_QUEUE) -> None:
        self.run = run
        self.max_batch = max_batch
        self.wait = wait
        self.max_queue = max_queue
        self.queue: asyncio.Queue[tuple[torch.Tensor, asyncio.Future]] = asyncio.Queue()

    async def submit(self, item: torch.Tensor) -> tuple[torch.Tensor, int]:
        """The result row for ``item`` and the size of the batch it ran in."""
        if self.queue.qsize() >= self.max_queue:
            raise UploadRejected(503, f"server busy: {self.queue.qsize()} requests queued; retry shortly")
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((item, future))
        return await future

    async def serve_forever(self) -> None:
        """Form and run batches until cancelled."""
        while True:
            items = [await self.queue.get()]
            if self.wait > 0 and self.queue.qsize() < self.max_batch - 1:
                await asyncio.sleep(self.wait)
            while len(items) < self.max_batch and not self.queue.empty():
                items.append(self.queue.get_nowait())
            items = [(x, f) for x, f in items if not f.done()]  # drop requests whose client gave up
            if not items:
                continue
            try:
                results = await asyncio.to_thread(self.run, torch.stack([x for x, _ in items]))
            except Exception as error:  # a bug: hand it to every waiting request rather than kill the loop
                for _, future in items:
                    if not future.done():
                        future.set_exception(error)
                continue
            for row, (_, future) in enumerate(items):
                if not future.done():
                    future.set_result((results[row], len(items)))












def create_app(run_dirs: list[str | Path], device: str = "auto", max_bytes: int = MAX_UPLOAD_BYTES,
               batch_wait: float = BATCH_WAIT_S, max_batch: int = MAX_BATCH,
               receive_timeout: float = RECEIVE_TIMEOUT_S, inference_timeout: float = INFERENCE_TIMEOUT_S,
               reload_on_sighup: bool = False, runs_root: str | Path | None = None,
               backend: str = "auto") -> FastAPI:
    """The FastAPI app serving the runs in ``run_dirs``, each under its directory's name, and the
    runs under ``runs_root`` (default ``runs/``, where it exists) to browse.

    Models load here, before the app exists, so a missing, unsafe or unservable run is a
    ``CheckpointError``/``ConfigError`` at start-up rather than at the first request; so is a
    ``runs_root`` given but missing. ``backend`` (``auto``, ``torch`` or ``onnx``) computes image
    runs' predictions (``BACKENDS``); an ONNX graph that does not reproduce the PyTorch model is refused
    at start-up too. With ``reload_on_sighup`` (the ``nnlab serve`` command) a
    SIGHUP reloads every model.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"--backend: expected one of {', '.join(BACKENDS)}, got {backend!r}")
    root = studio_runs.runs_folder(runs_root, required=not run_dirs)
    torch_device = resolve_device(device)
    models: dict[str, ServedModel] = {}
    for run_dir in run_dirs:
        served = ServedModel(Path(run_dir), torch_device, device, backend)
        if served.name in models:
            raise ConfigError(f"serve: two runs are named {served.name!r} ({models[served.name].run_dir} and "
                              f"{run_dir}); models are named by their directory, rename one")
        models[served.name] = served
    batchers: dict[str, MicroBatcher] = {}

    def reload_model(name: str) -> dict[str, Any]:
        served = models[name]
        try:
            served.reload()
        except NnlabError as error:
            raise UploadRejected(409, f"reload of {name!r} refused, still serving the checkpoint loaded at "
                                      f"{time.strftime('%H:%M:%S', time.localtime(served.current.loaded_at))}: "
                                      f"{error}") from None
        return served.info()

    def reload_all() -> None:
        for name in models:
            try:
                reload_model(name)
                print(f"nnlab serve: reloaded {name}", file=sys.stderr, flush=True)
            except UploadRejected as error:
                print(f"nnlab serve: {error.detail}", file=sys.stderr, flush=True)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        app.state.scratch = Path(tempfile.mkdtemp(prefix="nnlab-serve-"))  # uploads, for load_image's path API
        tasks = []
        for name, served in models.items():
            if served.can("serve") and not served.takes_text:
                batchers[name] = MicroBatcher(served.probabilities, max_batch, batch_wait)
                tasks.append(asyncio.create_task(batchers[name].serve_forever()))
        hup = reload_on_sighup and hasattr(signal, "SIGHUP") and threading.current_thread() is threading.main_thread()
        if hup:
            loop.add_signal_handler(signal.SIGHUP, lambda: loop.run_in_executor(None, reload_all))
        try:
            yield
        finally:
            if hup:
                loop.remove_signal_handler(signal.SIGHUP)
            for task in tasks:
                task.cancel()
            shutil.rmtree(app.state.scratch, ignore_errors=True)

    app = FastAPI(title="nnlab serve", version="1", lifespan=lifespan,
                  description="Top-k predictions of trained nnlab image, names and text-classification runs "
                              "(with Grad-CAM maps and attention weights), samples of language models, "
                              "translations with their attention, and the runs of a folder.")
    app.add_middleware(UploadGuard, max_bytes=max_bytes, timeout=receive_timeout)

    @app.exception_handler(UploadRejected)
    async def rejected(request: Request, error: UploadRejected) -> JSONResponse:
        return JSONResponse({"detail": error.detail}, status_code=error.status)

    def lookup(name: str) -> ServedModel:
        if name not in models:
            raise UploadRejected(404, f"no model named {name!r}; served models: {', '.join(models)}")
        return models[name]

    studio.add_page(app, PAGE_CSP)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness: ``ok`` and the number of models served."""
        return {"status": "ok", "models": len(models)}

    @app.get("/models")
    async def list_models() -> list[dict[str, Any]]:
        """Each served model: name, classes, input shape, when its checkpoint was loaded."""
        return [served.info() for served in models.values()]

    @app.post("/models/{model}/reload")
    async def reload(model: str) -> dict[str, Any]:
        """Reload the model's ``best.pt`` from its run directory (after a new checkpoint replaced it)."""
        lookup(model)
        return await asyncio.to_thread(reload_model, model)

    upload_schema = {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {
            "type": "object", "required": ["file"],
            "properties": {"file": {"type": "string", "format": "binary", "description": "an image file"}}}},
        "application/json": {"schema": {
            "type": "object", "required": ["inputs"],
            "properties": {"inputs": {"type": "array", "items": {"type": "string"}, "maxItems": MAX_TEXTS,
                                      "description": "names or texts (names and text-classification runs)"}}}}}}}

    async def predict_texts(served: ServedModel, request: Request, top_k: int) -> dict[str, Any]:
        body = await read_json(request, f'model {served.name!r} classifies text: {{"inputs": ["...", ...]}}')
        inputs = text_inputs(body, MAX_TEXTS, MAX_TEXT_CHARS)
        try:
            results = await asyncio.wait_for(asyncio.to_thread(served.classify, inputs, top_k), inference_timeout)
        except DataError as error:
            raise UploadRejected(422, str(error)) from None
        except asyncio.TimeoutError:
            raise UploadRejected(503, f"inference took longer than {inference_timeout:g} s; retry later") from None
        return {"model": served.name, "results": results}

    @app.post("/predict/{model}", openapi_extra=upload_schema)
    async def predict(model: str, request: Request, top_k: int = Query(3, ge=1, le=1000),
                      invert: Literal["auto", "yes", "no"] = "auto") -> dict[str, Any]:
        """Top-k classes with probabilities: for an image run, of the image in multipart field
        ``file``; for a names or text-classification run, of each string in the JSON ``inputs``."""
        served = lookup(model)
        wrong_kind(served, "serve", "/predict")
        if served.takes_text:
            return await predict_texts(served, request, top_k)
        image, filename = await read_image(request, served, invert)
        try:
            probs, batch_size = await asyncio.wait_for(batchers[model].submit(image), inference_timeout)
        except asyncio.TimeoutError:
            raise UploadRejected(503, f"inference took longer than {inference_timeout:g} s; retry later") from None
        (result,) = ranked(probs[None], served.current.state["classes"], [filename], top_k)
        return {"model": model, "file": filename, "batch_size": batch_size, "top": result["top"]}

    studio.add_model_routes(app, lookup, inference_timeout)
    studio_runs.add_runs_routes(app, root, models)
    app.state.runs_root = root
    return app


HEADER_TIMEOUT_S = 5.0
MAX_CONNECTIONS = 256


def header_timeout_protocol(seconds: float = HEADER_TIMEOUT_S) -> type:
    """uvicorn's h11 protocol, closing a connection whose first request's headers are not complete
    ``seconds`` after it opened (slow-header clients; uvicorn only times out idle keep-alives)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutH11Protocol(H11Protocol):
        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.header_timer = self.loop.call_later(seconds, self.close_if_no_request)

        def close_if_no_request(self) -> None:
            if self.cycle is None and not self.transport.is_closing():
                self.transport.close()

        def connection_lost(self, exc: Exception | None) -> None:
            self.header_timer.cancel()
            super().connection_lost(exc)

    return HeaderTimeoutH11Protocol


def serve(run_dirs: list[str | Path], host: str = "127.0.0.1", port: int = 8000, device: str = "auto",
          batch_wait_ms: float = BATCH_WAIT_S * 1000, max_batch: int = MAX_BATCH,
          max_bytes: int = MAX_UPLOAD_BYTES, on_ready: Callable[[dict[str, Any]], None] | None = None,
          runs_root: str | Path | None = None, backend: str = "auto",
          header_timeout: float = HEADER_TIMEOUT_S) -> None:
    """Serve ``run_dirs`` (and the runs under ``runs_root`` to browse) with uvicorn on ``host:port``
    until interrupted; SIGHUP reloads every model. A connection whose request headers are not all
    there ``header_timeout`` seconds after it opened is closed.

    The socket is bound here, so a port in use is a one-line ``ConfigError`` and port 0 picks a
    free one; ``on_ready`` then gets the URL and model names, before the first request is accepted.
    """
    import uvicorn
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port: expected 0 to 65535, got {port}")
    if max_batch < 1 or batch_wait_ms < 0:
        raise ConfigError(f"--max-batch must be >= 1 and --batch-wait-ms >= 0, got {max_batch} and {batch_wait_ms}")
    if not 0 < header_timeout < float("inf"):
        raise ConfigError(f"--header-timeout: expected positive seconds, got {header_timeout}")
    app = create_app(run_dirs, device=device, max_bytes=max_bytes, batch_wait=batch_wait_ms / 1000,
                     max_batch=max_batch, reload_on_sighup=True, runs_root=runs_root, backend=backend)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise ConfigError(f"--host {host} --port {port}: cannot listen there ({error.strerror or error})") from None
    port = sock.getsockname()[1]
    if on_ready is not None:
        on_ready({"url": f"http://{host}:{port}/", "models": [Path(r).resolve().name for r in run_dirs],
                  "runs": str(app.state.runs_root) if app.state.runs_root else None})
    # Keep-alive connections idle for 5 s are closed and so are connections whose request headers have
    # not arrived within header_timeout, so idle or slow clients cannot pin the server's sockets;
    # past MAX_CONNECTIONS uvicorn answers 503 at once.
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_keep_alive=5,
                            http=header_timeout_protocol(header_timeout), limit_concurrency=MAX_CONNECTIONS)
    uvicorn.Server(config).run(sockets=[sock])
