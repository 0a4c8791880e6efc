"""What the server's parts share: the served model (``ServedModel``: a run's model, reloadable in
place, with its kind's hooks), the HTTP error every endpoint raises (``UploadRejected``), the request
readers (an uploaded image, a JSON body, a list of strings) and the limits they enforce.

``nnlab.commands.serve`` (the app, the micro-batcher, the server), ``studio`` (Grad-CAM, sampling,
translation) and ``studio_runs`` (the runs view) import this module and not each other.
"""
from __future__ import annotations

import asyncio
import io
import json
import os
import tempfile
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from fastapi import Request
from PIL import Image, UnidentifiedImageError
from starlette.datastructures import UploadFile

from nnlab.data.batches import TensorBatches
from nnlab.data.images import load_image
from nnlab.engine.learner import predict_probs
from nnlab.errors import ConfigError, DataError
from nnlab.kinds import Kind, all_kinds, kind_of_run
from nnlab.kit.rundir import load_best

MAX_UPLOAD_BYTES = 8 * 2**20


# A 4096x4096 image decodes to 50 MB as RGB; a small PNG can claim far more (a decompression bomb).
MAX_PIXELS = 4096 * 4096


ACCEPTED_UPLOAD_TYPES = ("image/", "application/octet-stream")


# Runs whose inputs are strings (surnames, texts): POST /predict/{model} takes {"inputs": [...]} as JSON.
MAX_TEXTS = 256              # inputs per text request


MAX_TEXT_CHARS = 10_000      # characters per input


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
