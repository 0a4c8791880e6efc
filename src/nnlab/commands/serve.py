"""An HTTP server for trained runs, the studio: FastAPI on uvicorn, micro-batched (images), loopback by default.

``create_app`` loads each run's best checkpoint (weights only: ``load_checkpoint`` refuses any
pickle that would run code) and serves ``GET /health``, ``GET /models`` (each model with what
its kind can do, from the table of kinds), ``POST /predict/{model}`` (multipart field ``file``
for an image run; a JSON body ``{"inputs": [...]}`` of names or texts for a names or
text-classification run, with each token's attention weight where the run pools by attention),
``POST /models/{model}/reload``, the OpenAPI schema at ``/docs`` and ``/openapi.json``, and the
studio page at ``/``. ``nnlab.commands.studio`` adds Grad-CAM, sampling and translation;
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
import io
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Literal

import torch
from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse
from PIL import Image, UnidentifiedImageError
from starlette.datastructures import UploadFile
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nnlab.data.batches import TensorBatches
from nnlab.data.images import load_image
from nnlab.engine.learner import predict_probs, resolve_device
from nnlab.engine.metrics import ranked
from nnlab.errors import ConfigError, DataError, NnlabError
from nnlab.kinds import Kind, all_kinds, kind_of_run
from nnlab.kit.rundir import load_best

MAX_UPLOAD_BYTES = 8 * 2**20
# A 4096x4096 image decodes to 50 MB as RGB; a small PNG can claim far more (a decompression bomb).
MAX_PIXELS = 4096 * 4096
MAX_BATCH = 64
BATCH_WAIT_S = 0.002
RECEIVE_TIMEOUT_S = 10.0     # longest pause between two chunks of a request body
INFERENCE_TIMEOUT_S = 30.0
MAX_QUEUE = 1024             # requests waiting per model before the server answers 503
ACCEPTED_UPLOAD_TYPES = ("image/", "application/octet-stream")
# Runs whose inputs are strings (surnames, texts): POST /predict/{model} takes {"inputs": [...]} as JSON.
MAX_TEXTS = 256              # inputs per text request
MAX_TEXT_CHARS = 10_000      # characters per input
# The page's script and style come from this server only (no inline code, no CDN), requests go to
# this server only, previews and Grad-CAM maps are shown from blob: URLs.
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
            "frame-ancestors 'none'")
# What a served run can do, by the table of kinds: predict (serve, with cam for images), sample, translate.
SERVED_FEATURES = {"serve": "predict", "sample": "sample", "translate": "translate"}
STUDIO_FEATURES = ("serve", "cam", "sample", "translate")
# How image runs' predictions are computed: the PyTorch model, or its ONNX graph through onnxruntime
# (``nnlab.kinds.export.OnnxPredictor``; Grad-CAM maps still come from the PyTorch model). ``auto``:
# onnxruntime on the CPU (fashion-cnn's forward pass took 0.14-0.56x of PyTorch's time per batch of
# 1-64 there, docs/benchmarks.md), PyTorch on a GPU.
BACKENDS = ("auto", "torch", "onnx")


class UploadRejected(Exception):
    """A request refused for its transport or content; becomes ``status`` with ``detail``."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


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


@dataclass
class Loaded:
    """One generation of a served model: what ``load_run`` returned and when."""

    config: Any
    model: torch.nn.Module
    state: dict
    loaded_at: float
    checkpoint_mtime: float
    predictor: Any = None  # an ``OnnxPredictor`` where the image run is served through onnxruntime


def servable_kind(run_dir: str | Path) -> Kind:
    """The kind of the run in ``run_dir`` if the table of kinds says it predicts, samples or translates;
    else a ``ConfigError`` listing the kinds that do."""
    kind = kind_of_run(run_dir)
    if not kind.capabilities & SERVED_FEATURES.keys():
        takers = "; ".join(f"{', '.join(k.what for k in all_kinds() if k.supports(feature))} ({verb})"
                           for feature, verb in SERVED_FEATURES.items())
        raise ConfigError(f"serve: {run_dir} is a {kind.what}; serve takes: {takers}")
    return kind


class ServedModel:
    """A run's model, reloadable in place: a reload swaps in a new ``Loaded`` only if it loads cleanly.

    Image runs classify uploaded images (``probabilities``); names and text-classification runs
    classify strings (``classify``), encoded by their runner's ``encode_inputs``; sampling and
    translating runs are served through their kind's ``sample`` and ``translate``.
    """

    def __init__(self, run_dir: Path, device: torch.device, device_name: str = "auto",
                 backend: str = "auto") -> None:
        self.run_dir = run_dir
        self.name = run_dir.resolve().name
        self.device = device
        self.device_name = device_name  # what the kinds' sample/translate resolve themselves
        kind = servable_kind(run_dir)  # the table of kinds says who can be served, and for what
        self.kind = kind.name
        self.what = kind.what
        self.features = [feature for feature in STUDIO_FEATURES if kind.supports(feature)]
        self.runner = kind  # the kind's methods: encode_inputs, sample, translate, ...
        # strings (names, texts); otherwise images
        self.takes_text = "serve" in self.features and kind.takes_text
        # onnxruntime serves what `nnlab export` exports (image classifiers); other kinds run in PyTorch
        if backend == "auto":
            backend = "onnx" if device.type == "cpu" else "torch"
        self.backend = backend if backend == "onnx" and "serve" in self.features and not self.takes_text \
            and kind.supports("export") else "torch"
        self.reloads = 0
        self.current = self._load()

    def can(self, feature: str) -> bool:
        return feature in self.features

    @property
    def attends(self) -> bool:
        """Whether its predictions come with each token's attention weight (a run that pools by attention)."""
        return self.takes_text and getattr(self.current.model, "attend", None) is not None

    def _load(self) -> Loaded:
        mtime = (self.run_dir / "best.pt").stat().st_mtime if (self.run_dir / "best.pt").is_file() else 0.0
        config, model, state = load_best(self.run_dir, self.kind, self.device)
        predictor = None
        if self.backend == "onnx":
            from nnlab.kinds.export import OnnxPredictor
            predictor = OnnxPredictor(self.run_dir, model, state, tta_flip=bool(config.tta))
        if getattr(config, "channels_last", False):
            model.to(memory_format=torch.channels_last)
        return Loaded(config, model, state, time.time(), mtime, predictor)

    def reload(self) -> None:
        """Load ``best.pt`` again; on any error the old model keeps serving and the error propagates."""
        self.current = self._load()
        self.reloads += 1

    def info(self) -> dict[str, Any]:
        """What ``GET /models`` says about this model."""
        loaded = self.current
        common = {"name": self.name, "kind": self.kind, "what": self.what, "features": self.features,
                  "recipe": loaded.config.recipe, "model": loaded.state.get("model_name"),
                  "classes": list(loaded.state.get("classes") or []),
                  "device": str(self.device), "loaded_at": loaded.loaded_at,
                  "checkpoint_mtime": loaded.checkpoint_mtime, "reloads": self.reloads, "backend": self.backend}
        if loaded.predictor is not None:
            common["onnx_graph"] = loaded.predictor.source
        if self.can("sample"):
            common["sample_options"] = list(self.runner.sample_options)
        if self.takes_text:
            return {**common, "input": 'application/json {"inputs": ["...", ...]}', "attention": self.attends}
        if self.can("serve"):
            return {**common, "dataset": loaded.config.dataset, "input_shape": list(loaded.state["input_shape"]),
                    "tta_flip": bool(loaded.config.tta)}
        return common

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """Class probabilities [N, K] for uint8 images [N, C, H, W], as ``nnlab predict`` computes them."""
        loaded = self.current  # one generation for the whole batch, even if a reload lands meanwhile
        onnx = loaded.predictor is not None  # onnxruntime takes contiguous float32 inputs on the CPU
        batches = TensorBatches(images, torch.zeros(len(images), dtype=torch.long), len(images),
                                mean=loaded.state["mean"], std=loaded.state["std"],
                                device=torch.device("cpu") if onnx else self.device,
                                channels_last=not onnx and loaded.config.channels_last)
        if onnx:
            return loaded.predictor.probabilities(next(iter(batches))[0])
        probs, _ = predict_probs(loaded.model, batches, self.device, "fp32", loaded.config.tta)
        return probs

    def classify(self, inputs: list[str], top_k: int) -> list[dict[str, Any]]:
        """The ``top_k`` classes with probabilities of each string, as ``nnlab predict`` gives them; for a
        run that pools by attention, also each token's weight (``attention``: the tokens as the model read them)."""
        from nnlab.kinds.sequence import top_classes
        loaded = self.current
        ids = self.runner.encode_inputs(loaded.state, inputs).to(self.device)
        results = top_classes(loaded.model, ids, inputs, loaded.state["classes"], top_k)
        out = [{"input": r["file"], "top": r["top"]} for r in results]
        if self.attends:
            with torch.no_grad():
                weights = loaded.model.attention_weights(ids).cpu()  # [N, L], 0 at padding
            for row, tokens, weight in zip(out, self.runner.input_tokens(loaded.state, inputs), weights):
                row["attention"] = [{"token": t, "weight": round(float(a), 4)} for t, a in zip(tokens, weight)]
        return out


def text_inputs(body: Any, max_inputs: int, max_chars: int) -> list[str]:
    """``body["inputs"]``, a non-empty list of strings (422 otherwise), at most ``max_inputs`` of at most
    ``max_chars`` characters each (413 otherwise)."""
    inputs = body.get("inputs") if isinstance(body, dict) else None
    if not isinstance(inputs, list) or not inputs or not all(isinstance(t, str) for t in inputs):
        raise UploadRejected(422, 'expected {"inputs": ["...", ...]}: a non-empty list of strings')
    if len(inputs) > max_inputs or any(len(t) > max_chars for t in inputs):
        raise UploadRejected(413, f"at most {max_inputs} inputs of at most {max_chars} characters each")
    return inputs


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


def _decode(data: bytes, filename: str, shape: list[int], invert: str, scratch: Path) -> torch.Tensor:
    """Upload bytes -> uint8 [C, H, W] through ``load_image``, refusing non-images and oversized ones first."""
    try:
        with Image.open(io.BytesIO(data)) as probe:  # reads the header only
            width, height = probe.size
    except UnidentifiedImageError:
        raise UploadRejected(415, f"{filename}: not an image in a format Pillow reads (PNG, JPEG, GIF, BMP, "
                                  "TIFF, WebP, ...)") from None
    except Image.DecompressionBombError as error:  # Pillow's own refusal of a huge header, before ours
        raise UploadRejected(413, f"{filename}: too many pixels to decode safely ({error})") from None
    except (OSError, ValueError, SyntaxError) as error:
        raise UploadRejected(400, f"{filename}: corrupt image header ({error})") from None
    if width * height > MAX_PIXELS:
        raise UploadRejected(413, f"{filename}: {width}x{height} pixels exceeds the limit of {MAX_PIXELS} pixels")
    fd, temp = tempfile.mkstemp(dir=scratch, suffix=".upload")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        channels, height, width = shape
        return load_image(temp, (height, width), channels, invert=invert)
    except DataError as error:
        raise UploadRejected(400, str(error).replace(temp, filename)) from None
    finally:
        Path(temp).unlink(missing_ok=True)


def static_file(name: str) -> str:
    """A file of the page (``static/NAME``), read from the package."""
    return resources.files("nnlab.commands").joinpath("static", name).read_text(encoding="utf-8")


async def read_json(request: Request, what: str) -> Any:
    """The request's JSON body; a 415 for another content type (``what`` says what the endpoint expected),
    a 400 for malformed JSON, a 422 for JSON nested too deeply to parse."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("application/json"):
        raise UploadRejected(415, f"{what}: expected an application/json body, got content type "
                                  f"{content_type or 'none'!r}")
    try:
        return json.loads(await request.body())
    except ValueError as error:
        raise UploadRejected(400, f"malformed JSON body: {error}") from None
    except RecursionError:
        raise UploadRejected(422, "JSON body nested too deeply") from None


async def read_image(request: Request, served: ServedModel, invert: str) -> tuple[torch.Tensor, str]:
    """The uploaded image (multipart field ``file``) as the run's input, uint8 [C, H, W], and its file name;
    every way an upload can be wrong is an ``UploadRejected`` (4xx) naming it."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise UploadRejected(415, f"expected a multipart/form-data body with an image in field 'file', "
                                  f"got content type {content_type or 'none'!r}")
    try:
        form = await request.form(max_files=1, max_fields=10)
    except UploadRejected:
        raise
    except Exception as error:  # python-multipart's and Starlette's parse errors have no common base
        reason = getattr(error, "detail", None) or str(error)
        raise UploadRejected(400, f"malformed multipart body: {reason}") from None
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise UploadRejected(422, "multipart field 'file' with an image is required")
    filename = (upload.filename or "upload")[:120]
    if upload.content_type and not upload.content_type.startswith(ACCEPTED_UPLOAD_TYPES):
        raise UploadRejected(415, f"{filename}: content type {upload.content_type!r} is not an image")
    data = await upload.read()
    if not data:
        raise UploadRejected(400, f"{filename}: file is empty")
    image = await asyncio.to_thread(_decode, data, filename, served.current.state["input_shape"], invert,
                                    request.app.state.scratch)
    return image, filename


def wrong_kind(served: ServedModel, feature: str, endpoint: str) -> None:
    """A 422 unless ``served``'s kind supports ``feature`` (the table of kinds), naming what ``endpoint`` takes."""
    if not served.can(feature):
        takers = ", ".join(k.what for k in all_kinds() if k.supports(feature)) or "none"
        raise UploadRejected(422, f"model {served.name!r} is a {served.what}; {endpoint} takes: {takers}")


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
    from nnlab.commands import studio, studio_runs
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
