"""Users' image files as model input: any Pillow format, size and colour mode to uint8 [C, H, W].

A photo or a drawing of a digit differs from the training data in every way that matters: size,
aspect, colour mode, orientation and polarity. ``load_image`` undoes each in turn (EXIF rotation,
transparency, 16-bit depth, aspect-preserving fit, padding with the background colour, inversion),
so ``nnlab predict`` works on the files people actually have.
"""
from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from nnlab.client import INVERT_CHOICES, DamagedImage, convert, model_pixels, open_upright
from nnlab.errors import DataError


def _open(path: Path) -> Image.Image:
    """Open and decode ``path`` upright (EXIF orientation applied); any problem is a one-line ``DataError``."""
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if not path.is_file():
        raise DataError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    try:
        upright = open_upright(path)  # the exported model's client decodes the same way
    except DamagedImage as error:
        raise DataError(str(error)) from None
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image in a format Pillow can read") from None
    except Image.DecompressionBombError as error:
        raise DataError(f"{path}: image too large to decode safely ({error})") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise DataError(f"{path}: corrupt or unreadable image ({error})") from None
    if upright.width == 0 or upright.height == 0:
        raise DataError(f"{path}: image has zero size ({upright.width}x{upright.height})")
    return upright


def _convert(image: Image.Image, channels: int, path: Path) -> Image.Image:
    """``image`` in mode "L" (``channels`` 1) or "RGB" (``channels`` 3), whatever mode it came in."""
    try:
        return convert(image, channels)
    except ValueError as error:
        raise DataError(f"{path}: cannot convert colour mode {image.mode} ({error})") from None


def load_image(path: str | Path, size: tuple[int, int], channels: int, invert: str = "auto") -> torch.Tensor:
    """Read any image file as uint8 [channels, height, width] for a model trained on ``size`` images.

    ``size`` is (height, width). The image is turned upright, converted to grey (1 channel) or RGB
    (3), fitted inside ``size`` keeping its aspect ratio and padded with its own background colour
    (the median of its border pixels). ``invert`` "yes" or "no" forces 255 - x or not; "auto" inverts
    a grey image with a light background, because MNIST-style data is a light object on a dark
    background while photos and drawings are usually dark on light. Missing, empty or unreadable
    files raise ``DataError`` naming the path.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if invert not in INVERT_CHOICES:
        raise ValueError(f"invert must be one of {INVERT_CHOICES}, got {invert!r}")
    path = Path(path)
    return load_pil_image(_open(path), size, channels, invert, path)


def load_pil_image(image: Image.Image, size: tuple[int, int], channels: int, invert: str = "auto",
                   path: str | Path = "<image>") -> torch.Tensor:
    """An image already in memory as uint8 [channels, height, width], converted as ``load_image`` does."""
    if invert not in INVERT_CHOICES:
        raise ValueError(f"invert must be one of {INVERT_CHOICES}, got {invert!r}")
    image = _convert(image, channels, Path(path))
    pixels = model_pixels(image, size, invert)  # [H, W, C]: the exported model's client runs the same
    return torch.from_numpy(pixels).permute(2, 0, 1).contiguous()  # [C, H, W]


def save_image(tensor: torch.Tensor, path: str | Path) -> Path:
    """Write a uint8 image tensor, [C, H, W] with C in 1, 3 or 4 or [H, W], in the format of ``path``'s suffix.

    The inverse of ``load_image`` for tests and tools (making sample inputs, dumping what a model saw).
    """
    if tensor.dtype != torch.uint8:
        raise ValueError(f"save_image needs a uint8 tensor, got {tensor.dtype}")
    if tensor.ndim == 3 and tensor.shape[0] == 1:
        tensor = tensor[0]
    if tensor.ndim == 3 and tensor.shape[0] in (3, 4):
        pixels = tensor.detach().cpu().permute(1, 2, 0).numpy()  # [H, W, C]
    elif tensor.ndim == 2:
        pixels = tensor.detach().cpu().numpy()
    else:
        raise ValueError(f"save_image needs [C, H, W] with C in (1, 3, 4) or [H, W], got {tuple(tensor.shape)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path
