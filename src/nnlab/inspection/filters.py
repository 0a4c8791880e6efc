"""Looking at convolutions: hand-written kernels on an image, and a trained layer's filters and feature maps.

``convolve`` applies a named kernel (Sobel, Laplacian, sharpen, blur) or one read from a text
file to a grey image, as a conv layer does (cross-correlation, zero padding keeping the size),
optionally followed by max or average pooling, and saves input and result side by side.
``layer_filters`` draws a trained run's conv filters as a grid and, given an image, the
feature maps that layer produces for it (caught by a forward hook).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from PIL import Image

from nnlab.errors import ConfigError, DataError
from nnlab.files import save_figure

KERNELS: dict[str, list[list[float]]] = {
    "sobel-x": [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]],      # responds to vertical edges
    "sobel-y": [[-1, -2, -1], [0, 0, 0], [1, 2, 1]],      # responds to horizontal edges
    "laplacian": [[0, 1, 0], [1, -4, 1], [0, 1, 0]],      # second derivative: edges in any direction
    "sharpen": [[0, -1, 0], [-1, 5, -1], [0, -1, 0]],
    "blur": [[1 / 16, 2 / 16, 1 / 16], [2 / 16, 4 / 16, 2 / 16], [1 / 16, 2 / 16, 1 / 16]],  # Gaussian 3x3
}


def read_kernel(spec: str) -> torch.Tensor:
    """A kernel [kh, kw] by name (``KERNELS``) or from a text file of whitespace-separated rows."""
    if spec in KERNELS:
        return torch.tensor(KERNELS[spec], dtype=torch.float32)
    path = Path(spec)
    if not path.is_file():
        raise ConfigError(f"--kernel {spec!r}: not a kernel name ({', '.join(KERNELS)}) nor a file")
    try:
        rows = [[float(v) for v in line.split()] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (ValueError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: expected rows of numbers separated by spaces ({error})") from None
    if not rows or len({len(r) for r in rows}) != 1:
        raise DataError(f"{path}: expected a rectangle of numbers, one kernel row per line, all rows equally long")
    return torch.tensor(rows, dtype=torch.float32)


def apply_kernel(image: torch.Tensor, kernel: torch.Tensor, pool: str | None = None, size: int = 2) -> torch.Tensor:
    """Cross-correlate a grey image [H, W] with ``kernel`` (zero padding, same size), then pool if asked."""
    kh, kw = kernel.shape
    x = F.pad(image[None, None], (kw // 2, (kw - 1) // 2, kh // 2, (kh - 1) // 2))  # same-size output for odd and even kernels
    out = F.conv2d(x, kernel[None, None])
    if pool == "max":
        out = F.max_pool2d(out, size)
    elif pool == "avg":
        out = F.avg_pool2d(out, size)
    elif pool is not None:
        raise ConfigError(f"--pool {pool!r}: expected max or avg")
    return out[0, 0]


def _grey(path: Path) -> torch.Tensor:
    try:
        with Image.open(path) as image:
            return torch.from_numpy(np.asarray(image.convert("L"), dtype=np.float32) / 255.0)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise DataError(f"{path}: not a readable image ({error})") from None


def grid_figure(panels: list[tuple[np.ndarray, str]], columns: int, title: str = "") -> Figure:
    """``panels`` (a picture, [H, W] grey or [H, W, 3], and its label) in a grid ``columns`` wide:
    filters, feature maps, or an image before and after a kernel."""
    rows = math.ceil(len(panels) / columns)
    fig = Figure(figsize=(1.6 * columns, 1.6 * rows + 0.4), layout="tight")
    axes = np.atleast_1d(fig.subplots(rows, columns)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, (picture, label) in zip(axes, panels):
        ax.imshow(picture, cmap="gray" if picture.ndim == 2 else None, interpolation="nearest")
        ax.set_title(label, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def save_grid(panels: list[tuple[np.ndarray, str]], path: str | Path, columns: int, title: str = "") -> Path:
    """``grid_figure`` written to ``path`` as PNG; returns ``path``."""
    return save_figure(grid_figure(panels, columns, title), path)


def convolve(image: str | Path, kernel: str, pool: str | None = None, size: int = 2,
             out: str | Path | None = None) -> dict[str, Any]:
    """Apply ``kernel`` (and pooling) to an image file; saves input and result side by side as PNG."""
    path = Path(image)
    grey = _grey(path)
    weights = read_kernel(kernel)
    result = apply_kernel(grey, weights, pool, size)
    target = Path(out) if out else path.with_name(f"{path.stem}.{Path(kernel).stem}.png")
    save_grid([(grey.numpy(), "input"), (result.abs().numpy(), f"{kernel}" + (f" + {pool}-pool {size}" if pool else ""))],
               target, columns=2)
    return {"image": str(path), "kernel": weights.tolist(), "output": str(target),
            "input_shape": list(grey.shape), "output_shape": list(result.shape),
            "min": float(result.min()), "max": float(result.max())}


def scaled(array: torch.Tensor) -> np.ndarray:
    low, high = float(array.min()), float(array.max())
    return ((array - low) / (high - low if high > low else 1.0)).numpy()
