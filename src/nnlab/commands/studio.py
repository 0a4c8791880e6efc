"""The studio's model endpoints beside ``/predict``: Grad-CAM of an uploaded image, samples of a
language model (streamed as they are drawn), translations with their attention, and the page.

``POST /cam/{model}`` (image runs, multipart ``file`` as for ``/predict``; ``?class=`` picks the
class to explain, default the predicted one) answers the PNG ``nnlab cam`` draws, computed by
``inspection.cam.grad_cam`` on the served model. ``POST /sample/{model}`` (JSON: prime, length,
temperature, top_k, seed, and the kind's ``sample_options``) streams ``text/plain``: the kind's
own ``sample`` is called for ``SAMPLE_CHUNK`` characters at a time, each call primed with all the
text so far, so the text arrives while it is drawn (the same seed streams the same text).
``POST /translate/{model}`` (JSON ``{"inputs": [...], "beam": 1}``) answers the kind's
``translate`` and, per sentence, its ``first_attention`` matrix.

Each endpoint asks the table of kinds whether the run can do it (a 422 naming the kinds that
can), and each bounds its work like ``/predict``: request size by the upload guard, inputs by
count and length, and the computations by a ``Bounded`` queue (a few at once, a 503 past
``queue`` waiting) with the inference timeout.
"""
from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Callable, Literal
from urllib.parse import quote

import torch
from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nnlab.commands.served import (ServedModel, UploadRejected, read_image, read_json, static_file, text_inputs,
                                  wrong_kind)
from nnlab.errors import ConfigError, DataError
from nnlab.files import figure_png
from nnlab.inspection.cam import cam_figure, grad_cam

# Page files by name (never a path from the request) and their content types.
STATIC = {"studio.js": "text/javascript; charset=utf-8", "studio.css": "text/css; charset=utf-8"}
MAX_SAMPLE_LENGTH = 5000     # characters (tokens) one sample request may ask for
MAX_PRIME_CHARS = 2000
SAMPLE_CHUNK = 64            # characters per call of the kind's sample: the stream's step
MAX_TRANSLATE = 32           # sentences per translation request
MAX_TRANSLATE_CHARS = 500
MAX_BEAM = 10
WORKERS = 2                  # computations of one endpoint at once (the host's cores are shared with /predict)
MAX_WAITING = 16             # requests of one endpoint waiting before the server answers 503


class Bounded:
    """At most ``workers`` calls of one endpoint's computation at once, in worker threads; past
    ``queue`` requests waiting, a 503; past ``timeout`` seconds, a 503."""

    def __init__(self, what: str, timeout: float, workers: int = WORKERS, queue: int = MAX_WAITING) -> None:
        self.what, self.timeout, self.workers, self.queue = what, timeout, workers, queue
        self.waiting = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self.slots: asyncio.Semaphore | None = None

    async def run(self, function: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        if self.loop is not loop:  # a semaphore belongs to one event loop (each TestClient has its own)
            self.loop, self.slots = loop, asyncio.Semaphore(self.workers)
        if self.waiting >= self.queue:
            raise UploadRejected(503, f"server busy: {self.waiting} {self.what} requests queued; retry shortly")
        self.waiting += 1
        try:
            async with self.slots:
                return await asyncio.wait_for(asyncio.to_thread(function, *args), self.timeout)
        except asyncio.TimeoutError:
            raise UploadRejected(503, f"{self.what} took longer than {self.timeout:g} s; retry later") from None
        except (ConfigError, DataError) as error:  # the kind's own refusal of the inputs, naming them
            raise UploadRejected(422, str(error)) from None
        finally:
            self.waiting -= 1


class SampleRequest(BaseModel):
    """What ``POST /sample/{model}`` takes: the settings of ``nnlab sample``."""

    model_config = ConfigDict(extra="forbid")
    prime: str | None = Field(None, min_length=1, max_length=MAX_PRIME_CHARS,
                              description="text the sample starts with (default: the kind's)")
    length: int = Field(300, ge=0, le=MAX_SAMPLE_LENGTH, description="characters (or tokens) to draw")
    temperature: float = Field(0.8, gt=0, le=100, allow_inf_nan=False)
    top_k: int | None = Field(None, ge=1, le=1_000_000, description="draw from the k likeliest only")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    category: str | None = Field(None, max_length=200, description="name-generation runs: the language")
    start: str | None = Field(None, min_length=1, max_length=64, description="name-generation runs: start letters")
    count: int | None = Field(None, ge=1, le=200, description="name-generation runs: names to draw")


class TranslateRequest(BaseModel):
    """What ``POST /translate/{model}`` takes (the schema; ``inputs`` is checked as ``/predict`` checks it)."""

    inputs: list[str] = Field(..., min_length=1, max_length=MAX_TRANSLATE, description="sentences to translate")
    beam: int = Field(1, ge=1, le=MAX_BEAM, description="1: greedy; more: beam search of that width")


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` declaring a required JSON request body of ``model``'s schema."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}


def validated(model: type[BaseModel], body: Any) -> Any:
    """``body`` parsed as ``model``; a 422 naming the first field that is wrong."""
    try:
        return model.model_validate(body)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise UploadRejected(422, f"{where}: {first['msg']}") from None


IMAGE_UPLOAD = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"],
    "properties": {"file": {"type": "string", "format": "binary", "description": "an image file"}}}}}}}


def add_page(app: FastAPI, csp: str) -> None:
    """``/`` (the studio page) and its script and style under ``/static/NAME``."""
    headers = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": csp}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(static_file("index.html"), headers=headers)

    @app.get("/static/{asset}", include_in_schema=False)
    async def asset(asset: str) -> Response:
        if asset not in STATIC:
            raise UploadRejected(404, f"no page file named {asset!r}")
        return Response(static_file(asset), media_type=STATIC[asset], headers=headers)


def class_map(served: ServedModel, pixels: torch.Tensor, class_name: str | None) -> tuple[bytes, dict]:
    """Grad-CAM of ``pixels`` (uint8 [C, H, W], as ``/predict`` decodes them) for ``class_name``
    (None: the predicted class) on the served model: the overlay PNG ``nnlab cam`` writes, and what it shows."""
    loaded = served.current
    classes = list(loaded.state["classes"])
    shape = (-1, 1, 1)
    x = (pixels.float() / 255 - torch.tensor(loaded.state["mean"]).view(shape)) / torch.tensor(loaded.state["std"]).view(shape)
    target = classes.index(class_name) if class_name is not None else None
    try:
        heat, probs, target = grad_cam(loaded.model, x[None].to(served.device), target,  # x[None]: [1, C, H, W]
                                       tta_flip=bool(loaded.config.tta))  # the probabilities /predict gives
    except ConfigError:  # the model's features are not a [N, C, H, W] map (an MLP, an RNN over rows)
        raise UploadRejected(422, f"model {served.name!r} ({loaded.state['model_name']}) has no convolutional "
                                  "feature map for Grad-CAM to explain") from None
    loaded.model.zero_grad(set_to_none=True)  # the served model keeps no gradients between requests
    predicted = int(probs.argmax())
    title = f"{classes[target]} (p={probs[target]:.2f}); predicted {classes[predicted]} (p={probs[predicted]:.2f})"
    png = figure_png(cam_figure(pixels, heat.cpu(), title))
    return png, {"class": classes[target], "probability": float(probs[target]), "predicted": classes[predicted]}


def sample_options(served: ServedModel, request: SampleRequest) -> dict[str, Any]:
    """The kind-specific options set in ``request``, each one the kind's ``sample`` takes (a 422 otherwise)."""
    allowed = served.runner.sample_options
    options = {name: getattr(request, name) for name in ("category", "start", "count")
               if getattr(request, name) is not None}
    for name in options:
        if name not in allowed:
            raise UploadRejected(422, f"{name}: does not apply to model {served.name!r}, a {served.what}")
    return options


def add_model_routes(app: FastAPI, lookup: Callable[[str], ServedModel], inference_timeout: float) -> None:
    """``POST /cam/{model}``, ``POST /sample/{model}`` and ``POST /translate/{model}`` on ``app``."""
    cams = Bounded("Grad-CAM", inference_timeout, workers=1)  # one backward pass at a time
    samples = Bounded("sample", inference_timeout)
    translations = Bounded("translation", inference_timeout)

    @app.post("/cam/{model}", openapi_extra=IMAGE_UPLOAD, response_class=Response,
              responses={200: {"content": {"image/png": {}},
                               "description": "the image beside its Grad-CAM overlay (headers X-Class, "
                                              "X-Probability, X-Predicted, URL-quoted)"}})
    async def cam(model: str, request: Request,
                  class_name: str | None = Query(None, alias="class", max_length=200,
                                                 description="the class to explain (default: the predicted one)"),
                  invert: Literal["auto", "yes", "no"] = "auto") -> Response:
        """Grad-CAM of the image in multipart field ``file`` (an image run): where the evidence for the class lies."""
        served = lookup(model)
        wrong_kind(served, "cam", "/cam")
        classes = list(served.current.state["classes"])
        if class_name is not None and class_name not in classes:
            raise UploadRejected(422, f"class {class_name!r}: not a class of model {model!r}; classes: "
                                      f"{', '.join(classes)}")
        image, _ = await read_image(request, served, invert)
        png, shown = await cams.run(class_map, served, image, class_name)
        return Response(png, media_type="image/png", headers={
            "X-Class": quote(shown["class"], safe=""), "X-Probability": f"{shown['probability']:.6f}",
            "X-Predicted": quote(shown["predicted"], safe=""), "Cache-Control": "no-store"})

    @app.post("/sample/{model}", openapi_extra=json_body(SampleRequest), response_class=StreamingResponse,
              responses={200: {"content": {"text/plain": {}}, "description": "the sample, streamed as it is drawn"}})
    async def sample(model: str, request: Request) -> StreamingResponse:
        """Text drawn from a language model (or names from a name generator), starting with ``prime``."""
        served = lookup(model)
        wrong_kind(served, "sample", "/sample")
        settings = validated(SampleRequest, await read_json(request, f"model {model!r} samples"))
        options = sample_options(served, settings)

        def draw(prime: str | None, length: int, seed: int) -> str:
            return served.runner.sample(served.run_dir, prime=prime, length=length, temperature=settings.temperature,
                                        top_k=settings.top_k, seed=seed, device_name=served.device_name,
                                        **options)["text"]

        # A kind whose sample draws whole items (names) rather than continuing a text comes in one piece.
        continues = served.runner.sample_continues
        step = SAMPLE_CHUNK if continues else settings.length
        first = await samples.run(draw, settings.prime, min(step, settings.length), settings.seed)  # 422s here

        async def pieces() -> AsyncIterator[str]:
            text, drawn, calls = first, min(step, settings.length), 1
            yield text
            while drawn < settings.length:
                length = min(step, settings.length - drawn)
                try:
                    more = await samples.run(draw, text, length, settings.seed + calls)
                except UploadRejected:  # busy or slow: the text so far is what the client gets
                    return
                yield more[len(text):]  # the kind's sample starts with its prime: what follows is new
                text, drawn, calls = more, drawn + length, calls + 1

        return StreamingResponse(pieces(), media_type="text/plain; charset=utf-8",
                                 headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"})

    @app.post("/translate/{model}", openapi_extra=json_body(TranslateRequest))
    async def translate(model: str, request: Request) -> dict[str, Any]:
        """Each sentence's translation and its attention matrix (``weights[t][s]``: output token t on source token s)."""
        served = lookup(model)
        wrong_kind(served, "translate", "/translate")
        body = await read_json(request, f'model {model!r} translates: {{"inputs": ["...", ...], "beam": 1}}')
        inputs = text_inputs(body, MAX_TRANSLATE, MAX_TRANSLATE_CHARS)
        beam = validated(TranslateRequest, body).beam
        return {"model": model, "results": await translations.run(translate_with_attention, served, inputs, beam)}


def translate_with_attention(served: ServedModel, inputs: list[str], beam: int) -> list[dict[str, Any]]:
    """The kind's ``translate`` of ``inputs`` and, for each, its ``first_attention``: source tokens,
    output tokens and the weights ``[T, S]``."""
    results = served.runner.translate(served.run_dir, inputs, beam=beam, device_name=served.device_name)
    loaded = served.current
    for result in results:
        source, output, weights = served.runner.first_attention(loaded.model, result["source"], loaded.state,
                                                                served.device, beam)
        result["attention"] = {"source": source, "output": output,
                               "weights": [[round(w, 4) for w in row] for row in weights.tolist()]}
    return results
