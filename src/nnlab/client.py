"""The reference client of an exported image model: numpy, Pillow and onnxruntime, no nnlab, no torch.

``nnlab export RUN --format onnx`` copies this file beside the model as ``nnlab_client.py``; with
the metadata ``MODEL.json`` it is all a consumer needs::

    python nnlab_client.py model.onnx photo.jpg drawing.png --top-k 3

prints, as JSON, what ``nnlab predict RUN photo.jpg drawing.png --json`` prints. ``nnlab predict``
reads image files through the functions below (``nnlab.data.images`` calls them), so the steps
``STEPS`` lists, also written into the metadata as ``preprocess``, are the code both run rather
than a description of it that could drift.
"""
from __future__ import annotations

import argparse
import io
import json
import struct
import sys
import zlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

INVERT_CHOICES = ("auto", "yes", "no")
# Integer and float modes that convert("L") would clip at 255 instead of scaling.
HIGH_DEPTH_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")

# What is done to an image file, in order, before the model sees it (H x W: the model's input size).
STEPS: dict[str, str] = {
    "decode": "a PNG whose chunk CRCs do not all match is refused; Pillow Image.open and load, then "
              "ImageOps.exif_transpose (turned upright by its EXIF orientation)",
    "high_depth": "modes I, I;16*, F: to 8-bit grey, divided by 257 when the mode is I;16* or a value exceeds 255, "
                  "rounded and clipped to [0, 255]",
    "alpha": "modes RGBA, LA, PA or a transparency key: alpha-composited onto opaque white, then RGB",
    "colour": "1 channel: Pillow convert('L') (L = R * 299/1000 + G * 587/1000 + B * 114/1000); "
              "3 channels: convert('RGB')",
    "background": "per-channel median of the outermost rows and columns, as integers",
    "fit": "scale = min(H / height, W / width); size (round(width * scale), round(height * scale)) clipped to "
           "[1, W] x [1, H]; Pillow BILINEAR resize (antialiased when shrinking); pasted at "
           "((W - new width) // 2, (H - new height) // 2) on an H x W canvas of the background colour",
    "invert": "255 - x when invert is 'yes', or 'auto' (the default) with 1 channel and a background above 127: "
              "the training data is a light object on a dark background, photos are mostly the opposite",
    "normalize": "float32 x * (1 / (255 * std)) + (-mean / std) per channel, layout [N, C, H, W]",
    "tta_flip": "when the metadata's tta_flip is true: the softmax averaged with that of the input mirrored "
                "left-right (the W axis reversed)",
}


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class DamagedImage(ValueError):
    """An image file whose own checksums say that its bytes changed after it was written."""


def check_png(data: bytes, path: str | Path) -> None:
    """Raise ``DamagedImage`` naming ``path`` when ``data``, its bytes, is a PNG with a chunk cut short or
    whose CRC does not match its bytes. Pillow checks the header's CRC only and decodes image data with a
    wrong one without a word (as browsers do): a prediction on altered pixels would look like any other.
    Bytes after IEND are ignored."""
    if not data.startswith(PNG_SIGNATURE):
        return
    pos = len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        name = kind.decode("latin-1") if kind.isalpha() else repr(kind)
        end = pos + 12 + length  # length, type, data, CRC
        if end > len(data):
            raise DamagedImage(f"{path}: damaged PNG: chunk {name} at byte {pos} is cut short "
                               f"({len(data) - pos} of its {12 + length} bytes)")
        if zlib.crc32(data[pos + 4:end - 4]) != struct.unpack(">I", data[end - 4:end])[0]:
            raise DamagedImage(f"{path}: damaged PNG: chunk {name} at byte {pos} fails its CRC check "
                               "(the file changed after it was written)")
        if kind == b"IEND":
            return
        pos = end
    raise DamagedImage(f"{path}: damaged PNG: cut short before its IEND chunk")


def open_upright(path: str | Path) -> Image.Image:
    """Decode ``path`` and turn it upright by its EXIF orientation: a damaged PNG is a ``DamagedImage``
    (``check_png``); Pillow's errors pass through."""
    data = Path(path).read_bytes()
    check_png(data, path)
    try:
        opened = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:  # its message would name the in-memory copy, not the file
        raise UnidentifiedImageError(f"cannot identify image file {str(path)!r}") from None
    with opened as image:
        image.load()
        return ImageOps.exif_transpose(image)  # a new image, which outlives the closed file


def to_8bit(image: Image.Image) -> Image.Image:
    """An 8-bit grey image from a 16-bit, 32-bit or float one, scaled rather than clipped.

    Values above 255 mean the data is 16-bit (PNG and TIFF store it in these modes), so it is
    scaled from [0, 65535]; otherwise values are already in [0, 255].
    """
    values = np.asarray(image, dtype=np.float64)
    if image.mode.startswith("I;16") or values.max(initial=0) > 255:
        values = values / 257
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))  # 2-D uint8: mode "L"


def flatten_alpha(image: Image.Image) -> Image.Image:
    """Composite a transparent image onto white, since transparent pixels often hold black that is not meant to show."""
    rgba = image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def convert(image: Image.Image, channels: int) -> Image.Image:
    """``image`` in mode "L" (``channels`` 1) or "RGB" (``channels`` 3), whatever mode it came in;
    a mode Pillow cannot convert is its ``ValueError``."""
    if image.mode in HIGH_DEPTH_MODES:
        image = to_8bit(image)
    elif image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        image = flatten_alpha(image)
    return image.convert("L" if channels == 1 else "RGB")


def border_median(image: Image.Image) -> tuple[int, ...]:
    """Per-channel median of the outermost rows and columns: the image's background colour."""
    pixels = np.asarray(image).reshape(image.height, image.width, -1)  # [H, W, C]
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])  # [2W + 2H, C]
    return tuple(int(v) for v in np.median(border, axis=0))


def fit_and_pad(image: Image.Image, size: tuple[int, int], background: tuple[int, ...]) -> Image.Image:
    """Resize ``image`` to fit inside ``size`` (height, width) keeping its aspect, centred on ``background``."""
    height, width = size
    scale = min(height / image.height, width / image.width)
    new_size = (max(1, min(width, round(image.width * scale))), max(1, min(height, round(image.height * scale))))
    # Bilinear (antialiased when shrinking) rather than Lanczos, whose overshoot draws dark halos around strokes.
    resized = image.resize(new_size, Image.Resampling.BILINEAR)
    canvas = Image.new(image.mode, (width, height), background if len(background) > 1 else background[0])
    canvas.paste(resized, ((width - new_size[0]) // 2, (height - new_size[1]) // 2))
    return canvas


def model_pixels(image: Image.Image, size: tuple[int, int], invert: str = "auto") -> np.ndarray:
    """Steps background, fit and invert: an image ``convert`` made grey or RGB as the uint8 [height, width, channels] pixels
    the model was trained on."""
    if invert not in INVERT_CHOICES:
        raise ValueError(f"invert must be one of {INVERT_CHOICES}, got {invert!r}")
    channels = len(image.getbands())
    background = border_median(image)
    image = fit_and_pad(image, size, background)
    if invert == "yes" or (invert == "auto" and channels == 1 and background[0] > 127):
        image = ImageOps.invert(image)
    return np.asarray(image).reshape(image.height, image.width, channels).copy()  # [H, W, C]


def normalize(pixels: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Step normalize: uint8 [N, H, W, C] -> float32 [N, C, H, W], the multiply-add nnlab's batches do."""
    scale = np.array([1.0 / (255.0 * s) for s in std], np.float32).reshape(1, -1, 1, 1)
    shift = np.array([-m / s for m, s in zip(mean, std)], np.float32).reshape(1, -1, 1, 1)
    return pixels.transpose(0, 3, 1, 2).astype(np.float32) * scale + shift


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of float logits [N, K]."""
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


class Client:
    """An exported ONNX model and its metadata (``MODEL.json``): image files in, top-k classes out."""

    def __init__(self, model: str | Path, metadata: str | Path | None = None) -> None:
        import onnxruntime
        model = Path(model)
        self.meta: dict[str, Any] = json.loads(Path(metadata or f"{model}.json").read_text(encoding="utf-8"))
        self.session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """Step tta_flip: class probabilities [N, K] of normalized inputs [N, C, H, W]."""
        inputs, outputs = self.meta["input"]["name"], [self.meta["output"]["name"]]
        probs = softmax(self.session.run(outputs, {inputs: x})[0])
        if self.meta.get("tta_flip"):
            probs = (probs + softmax(self.session.run(outputs, {inputs: np.ascontiguousarray(x[..., ::-1])})[0])) / 2
        return probs

    def predict(self, files: Sequence[str | Path], top_k: int = 3, invert: str = "auto") -> list[dict[str, Any]]:
        """For each file, ``{"file", "top": [{"class", "probability"}, ...]}``, likeliest first."""
        _, channels, height, width = self.meta["input"]["shape"]
        pixels = np.stack([model_pixels(convert(open_upright(f), channels), (height, width), invert) for f in files])
        probs = self.probabilities(normalize(pixels, self.meta["input"]["mean"], self.meta["input"]["std"]))
        classes = self.meta["classes"]
        order = np.argsort(-probs, axis=1, kind="stable")[:, :top_k]
        return [{"file": str(f), "top": [{"class": classes[i], "probability": round(float(p[i]), 6)} for i in row]}
                for f, p, row in zip(files, probs, order)]


def main(argv: Sequence[str] | None = None) -> int:
    """``python client.py MODEL.onnx IMAGE... [--top-k K] [--invert auto|yes|no]``: JSON on stdout."""
    parser = argparse.ArgumentParser(description="Classify image files with an exported nnlab ONNX model.")
    parser.add_argument("model", help="the .onnx file; its metadata is MODEL.json beside it")
    parser.add_argument("files", nargs="+", help="image files (any size, colour mode or format Pillow reads)")
    parser.add_argument("--metadata", help="the metadata JSON (default MODEL.json)")
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--invert", choices=INVERT_CHOICES, default="auto")
    args = parser.parse_args(argv)
    if args.top_k < 1:
        parser.error(f"--top-k must be at least 1, got {args.top_k}")
    try:
        results = Client(args.model, args.metadata).predict(args.files, args.top_k, args.invert)
    except (OSError, ValueError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
