"""Neural style transfer (Gatys, Ecker & Bethge, 2016): paint a content photo in a style image's manner.

An image is optimised, pixel by pixel, so that VGG19's features describe it as they describe
the content image at one deep layer (``conv4_2``: where things are), and as they describe the
style image at several layers through Gram matrices (which features fire together, wherever
they are: the textures and strokes)::

    total = content_weight * mse(F_c(x), F_c(content))
          + style_weight * sum_l w_l * mse(G_l(x), G_l(style))     G = F F^T / (C * H * W)
          + tv_weight * mean squared difference of neighbouring pixels

Only VGG19's ``features`` are built, up to the deepest layer used, in eval mode with their
weights frozen. ``convX_Y`` names a conv output, ``reluX_Y`` the same after its ReLU, ``poolX``
the X-th max-pool. Weights are torchvision's ``IMAGENET1K_V1`` file, read from torch.hub's
cache (downloaded there on first use, hash-checked: ``models/weights.py``) or a given path,
always loaded weights-only, or ``"random"``: the same network randomly initialised, for tests
and texture synthesis. The image being optimised lives in [0, 1] RGB; the ImageNet
normalisation is the first thing VGG19 applies.
"""
from __future__ import annotations

import io
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch import nn
from tqdm import tqdm

from nnlab.data.images import _convert, _open
from nnlab.engine.learner import autocast, resolve_device
from nnlab.errors import CheckpointError, ConfigError, DataError
from nnlab.files import atomic_write, load_weights
from nnlab.models.weights import cached_file

WEIGHTS_URL = torchvision.models.VGG19_Weights.IMAGENET1K_V1.url
WEIGHTS_FILE = WEIGHTS_URL.rsplit("/", 1)[1]  # vgg19-dcbb9e9d.pth: the SHA-256 prefix is in the name
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The PyTorch tutorial's pair for normalised Grams and mean-squared losses: a Gram entry is an
# average over C*H*W products, so the style MSE of ImageNet VGG19 runs ~1e-6..1e-5 of the content
# MSE; 1e6 brings both terms to the same order at the start of the optimisation.
CONTENT_WEIGHT = 1.0
STYLE_WEIGHT = 1e6
CONTENT_LAYER = "conv4_2"
STYLE_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")  # Gatys et al.'s choice, equal weights
MAX_SIZE = 2048  # longer side; at 2048 px conv1's activations alone take 1 GiB per copy
MIN_SIZE = 16
OPTIMIZERS = ("lbfgs", "adam")
INITS = ("content", "noise")
# LBFGS keeps 2 * history image-sized vectors: 20 costs 120 MiB at 512 px (torch's default 100, 600 MiB).
LBFGS_HISTORY = 20
DEFAULT_LR = {"lbfgs": 1.0, "adam": 0.02}  # adam: pixels in [0, 1], ~5 grey levels per step at first


def _layer_names() -> list[str]:
    """The names of torchvision's VGG19 ``features`` modules, in order: conv1_1, relu1_1, ..., pool5."""
    names, block, index = [], 1, 1
    for item in torchvision.models.vgg.cfgs["E"]:
        if item == "M":
            names.append(f"pool{block}")
            block, index = block + 1, 1
        else:
            names += [f"conv{block}_{index}", f"relu{block}_{index}"]
            index += 1
    return names


LAYER_NAMES = _layer_names()


def parse_style_layers(spec: str | Mapping[str, float] | tuple[str, ...] | list[str]) -> dict[str, float]:
    """Style layers and their weights from ``"conv1_1,conv2_1:0.5"`` (weight 1 where none is given), a list or dict."""
    if isinstance(spec, Mapping):
        layers = {str(k): float(v) for k, v in spec.items()}
    else:
        items = spec.split(",") if isinstance(spec, str) else list(spec)
        layers = {}
        for item in (i.strip() for i in items):
            name, _, weight = item.partition(":")
            try:
                layers[name.strip()] = float(weight) if weight else 1.0
            except ValueError:
                raise ConfigError(f"--style-layers: weight {weight!r} of {name} is not a number") from None
    if not layers:
        raise ConfigError("--style-layers: give at least one layer, e.g. conv1_1,conv2_1")
    for name, weight in layers.items():
        check_layer(name, "--style-layers")
        if not weight >= 0:
            raise ConfigError(f"--style-layers: weight of {name} must be >= 0, got {weight}")
    return layers


def check_layer(name: str, flag: str) -> None:
    """A ``ConfigError`` naming ``flag`` unless ``name`` is a VGG19 layer name."""
    if name not in LAYER_NAMES:
        raise ConfigError(f"{flag}: no VGG19 layer {name!r}; layers are conv1_1..conv5_4, relu1_1..relu5_4, "
                          "pool1..pool5")


class VGGFeatures(nn.Module):
    """VGG19's ``features`` up to and including layer ``last``; ``forward`` returns the named activations.

    Layer ``i`` here is torchvision's ``features[i]``, so its state dict maps one to one. The
    input is an RGB image in [0, 1]; the ImageNet normalisation is applied first.
    """

    def __init__(self, last: str, layers: nn.Sequential) -> None:
        super().__init__()
        self.names = LAYER_NAMES[:LAYER_NAMES.index(last) + 1]
        self.layers = layers
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, image: torch.Tensor, wanted: set[str]) -> dict[str, torch.Tensor]:
        x = (image - self.mean) / self.std
        out = {}
        for name, layer in zip(self.names, self.layers):
            x = layer(x)
            if name in wanted:
                out[name] = x
        return out


def pools_before(name: str) -> int:
    """How many 2x2 max-pools halve the image on its way to VGG19 layer ``name``."""
    return sum(n.startswith("pool") for n in LAYER_NAMES[:LAYER_NAMES.index(name)])



def _vgg19_layers(last: str) -> nn.Sequential:
    """VGG19's conv/ReLU/pool modules up to ``last``, on the meta device (no memory, no global RNG)."""
    widths = iter(c for c in torchvision.models.vgg.cfgs["E"] if c != "M")
    layers: list[nn.Module] = []
    channels = 3
    for name in LAYER_NAMES[:LAYER_NAMES.index(last) + 1]:
        if name.startswith("conv"):
            width = next(widths)
            layers.append(nn.Conv2d(channels, width, 3, padding=1, device="meta"))
            channels = width
        elif name.startswith("relu"):
            layers.append(nn.ReLU())  # not in place: a conv layer's output may itself be a feature we keep
        else:
            layers.append(nn.MaxPool2d(2, 2))
    return nn.Sequential(*layers)


def weights_path(weights: str | Path | None) -> Path | None:
    """The state-dict file ``weights`` means: None is torchvision's file (downloaded once), ``"random"`` none at all."""
    if weights == "random":
        return None
    if weights is None or weights == "imagenet":
        return cached_file(WEIGHTS_URL, "VGG19 weights", ", pass --weights PATH, or --weights random for an "
                                                         "untrained VGG19")
    path = Path(weights).expanduser()
    if not path.is_file():
        raise CheckpointError(f"--weights {path}: no such file (torchvision's VGG19 weights: {WEIGHTS_URL})")
    return path


def _read_features_state(path: Path, n_layers: int) -> dict[str, torch.Tensor]:
    """``features.N.*`` (or ``N.*``) tensors of a VGG19 state dict for N < ``n_layers``, keyed ``N.*``."""
    state = load_weights(path, "cpu", "VGG19 weights file")
    kept = {}
    for key, value in state.items():
        short = key[len("features."):] if key.startswith("features.") else key
        index = short.split(".", 1)[0]
        if index.isdigit() and int(index) < n_layers and torch.is_tensor(value):
            kept[short] = value
    return kept


def vgg19_features(last: str, weights: str | Path | None = None, seed: int = 0,
                   device: str | torch.device = "cpu") -> VGGFeatures:
    """VGG19's features up to layer ``last`` on ``device``, frozen and in eval mode, with ``weights``.

    ``weights`` is None (torchvision's file, downloaded once), a state-dict path or ``"random"`` (see ``weights_path``).

    Random weights follow torchvision's VGG init (Kaiming normal, fan-out, zero bias) drawn from a
    generator seeded with ``seed``. On CPU and CUDA the convs are channels-last: forward + backward
    runs 1.3x faster on a 2-core CPU (benchmarks/stylize_speed.py); the image itself stays NCHW.
    """
    check_layer(last, "layer")
    layers = _vgg19_layers(last)
    path = weights_path(weights)
    if path is None:
        layers = layers.to_empty(device="cpu")
        generator = torch.Generator().manual_seed(seed)
        for layer in layers:
            if isinstance(layer, nn.Conv2d):
                nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu", generator=generator)
                nn.init.zeros_(layer.bias)
    else:
        state = _read_features_state(path, len(layers))
        wrong = [f"features.{k} missing" if k not in state else f"features.{k} is {tuple(state[k].shape)}, "
                 f"expected {tuple(v.shape)}" for k, v in layers.state_dict().items()
                 if k not in state or state[k].shape != v.shape]
        if wrong:
            raise CheckpointError(f"{path}: not VGG19 weights up to {last}: {'; '.join(wrong[:3])}")
        layers.load_state_dict(state, strict=False, assign=True)  # the file's other layers are not built
        layers.float()
    model = VGGFeatures(last, layers).eval().to(device)
    model.requires_grad_(False)
    if torch.device(device).type in ("cpu", "cuda"):  # measured on CPU; cuDNN's fastest convs are NHWC too
        model.layers.to(memory_format=torch.channels_last)
    return model


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] feature maps -> [N, C, C] Gram matrices G = F F^T / (C * H * W), F the maps flattened."""
    n, c, h, w = features.shape
    flat = features.reshape(n, c, h * w)  # [N, C, H*W]: one row per feature map
    return flat @ flat.transpose(1, 2) / (c * h * w)


def total_variation(image: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between neighbouring pixels of [N, C, H, W]: small for smooth images."""
    return ((image[..., 1:, :] - image[..., :-1, :]).pow(2).mean()
            + (image[..., :, 1:] - image[..., :, :-1]).pow(2).mean())


class StyleLoss(nn.Module):
    """The weighted content, style and total-variation terms of an image, against fixed targets.

    The targets (the content image's features at ``content_layer``, the style image's Gram
    matrices at ``style_layers``) are computed once here; calling the module gives a dict of the
    weighted terms ``content``, ``style``, ``tv`` and their sum ``total``.
    """

    def __init__(self, features: VGGFeatures, content: torch.Tensor, style: torch.Tensor, content_layer: str,
                 style_layers: Mapping[str, float], content_weight: float, style_weight: float,
                 tv_weight: float = 0.0, precision: str = "fp32") -> None:
        super().__init__()
        self.features = features
        self.precision = precision
        self.content_layer, self.style_layers = content_layer, dict(style_layers)
        self.weights = {"content": content_weight, "style": style_weight, "tv": tv_weight}
        with torch.no_grad():
            self.content_target = self.activations(content, {content_layer})[content_layer]
            self.style_targets = {k: gram_matrix(v) for k, v in self.activations(style, set(self.style_layers)).items()}

    def activations(self, image: torch.Tensor, wanted: set[str]) -> dict[str, torch.Tensor]:
        """The VGG feature maps in ``wanted``, computed in ``precision`` and returned in fp32: the
        Gram matrices and losses are always fp32 (bf16 sums over H*W would lose too much)."""
        with autocast(image.device, self.precision):
            acts = self.features(image, wanted)
        return {k: v.float() for k, v in acts.items()}

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        acts = self.activations(image, {self.content_layer, *self.style_layers})
        content = F.mse_loss(acts[self.content_layer], self.content_target)
        style = sum(w * F.mse_loss(gram_matrix(acts[k]), self.style_targets[k]) for k, w in self.style_layers.items())
        tv = total_variation(image) if self.weights["tv"] else image.new_zeros(())
        terms = {"content": self.weights["content"] * content, "style": self.weights["style"] * style,
                 "tv": self.weights["tv"] * tv}
        terms["total"] = terms["content"] + terms["style"] + terms["tv"]
        return terms


def optimize(image: torch.Tensor, loss: Callable[[torch.Tensor], dict[str, torch.Tensor]], steps: int,
             optimizer: str = "lbfgs", lr: float | None = None,
             on_step: Callable[[int, dict[str, torch.Tensor]], None] | None = None) -> torch.Tensor:
    """Optimise ``image`` (a leaf, modified in place and kept in [0, 1]) for ``steps`` steps of ``loss``.

    One LBFGS step is one iteration with one loss evaluation (``max_iter=1``, its history kept
    across steps); one Adam step is one gradient step. ``on_step(step, terms)`` sees the loss
    terms evaluated during that step. Returns ``image`` clamped to [0, 1].
    """
    lr = DEFAULT_LR[optimizer] if lr is None else lr
    if optimizer == "lbfgs":
        opt: torch.optim.Optimizer = torch.optim.LBFGS([image], lr=lr, max_iter=1, history_size=LBFGS_HISTORY)
    else:
        opt = torch.optim.Adam([image], lr=lr)
    terms: dict[str, torch.Tensor] = {}

    def closure() -> torch.Tensor:
        with torch.no_grad():
            image.clamp_(0, 1)  # pixels outside [0, 1] would be clipped in the saved PNG anyway
        opt.zero_grad(set_to_none=True)
        terms.update(loss(image))
        terms["total"].backward()
        return terms["total"]

    for step in range(1, steps + 1):
        opt.step(closure)
        if on_step is not None:
            on_step(step, {k: v.detach() for k, v in terms.items()})
    with torch.no_grad():
        return image.clamp_(0, 1)


def resized_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(width, height) with the longer side ``size``, keeping the aspect ratio."""
    scale = size / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def load_rgb(path: str | Path, size: int) -> torch.Tensor:
    """Any Pillow-readable image as float [1, 3, H, W] in [0, 1], its longer side resized to ``size``."""
    path = Path(path)
    image = _convert(_open(path), 3, path)
    image = image.resize(resized_size(image.width, image.height, size), Image.Resampling.LANCZOS)
    pixels = np.asarray(image, dtype=np.float32) / 255.0  # [H, W, 3]
    return torch.from_numpy(pixels).permute(2, 0, 1)[None].contiguous()  # [1, 3, H, W]


# RGB <-> YIQ (NTSC): Y is luminance, I and Q carry the colour.
_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]])


def to_yiq(image: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,njhw->nihw", _YIQ.to(image), image)


def from_yiq(image: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,njhw->nihw", torch.linalg.inv(_YIQ).to(image), image)


def luminance_only(content: torch.Tensor, style: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both images as grey RGB of their luminance, the style's luminance matched to the content's mean and std.

    Gatys et al.'s "Preserving color in neural artistic style transfer": transfer the style of
    the luminance only, then put the content's colours (``with_chroma_of``) back.
    """
    y_content, y_style = to_yiq(content)[:, :1], to_yiq(style)[:, :1]
    y_style = (y_style - y_style.mean()) / y_style.std().clamp_min(1e-6) * y_content.std() + y_content.mean()
    return y_content.expand(-1, 3, -1, -1).clone(), y_style.clamp(0, 1).expand(-1, 3, -1, -1).clone()


def with_chroma_of(image: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
    """``image``'s luminance (Y) with the colour channels (I, Q) of ``colours``, back in RGB [0, 1]."""
    return from_yiq(torch.cat([to_yiq(image)[:, :1], to_yiq(colours)[:, 1:]], 1)).clamp(0, 1)


def png_bytes(image: torch.Tensor) -> bytes:
    """[1, 3, H, W] in [0, 1] as the bytes of an 8-bit RGB PNG."""
    pixels = (image[0].detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()  # [H, W, 3]
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def frame_path(out: Path, step: int) -> Path:
    """Where ``--save-every`` puts the image after ``step``: ``OUT.step0050.png`` beside the output."""
    return out.with_name(f"{out.stem}.step{step:04d}.png")


def load_pair(content: str | Path, style: str | Path, size: int, deepest: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Both images by ``load_rgb``; a ``DataError`` where one is too thin to reach layer ``deepest``."""
    need = 2 ** pools_before(deepest)
    images = load_rgb(content, size), load_rgb(style, size)
    for path, picture in zip((content, style), images):
        if min(picture.shape[2:]) < need:
            raise DataError(f"{path}: {picture.shape[3]}x{picture.shape[2]} px at --size {size}; layer {deepest} "
                            f"needs a shorter side of at least {need} px (VGG19 halves it {pools_before(deepest)} "
                            "times before it): a larger --size or a less elongated image")
    return images


def _check_options(size: int, steps: int, optimizer: str, lr: float | None, init: str, content_layer: str,
                   save_every: int, loss_weights: Mapping[str, float]) -> None:
    if size > MAX_SIZE:
        raise ConfigError(f"--size {size}: at most {MAX_SIZE} px (the longer side); VGG19's activations at that "
                          "size already need several GiB")
    if size < MIN_SIZE:
        raise ConfigError(f"--size {size}: at least {MIN_SIZE} px")
    if steps < 1:
        raise ConfigError(f"--steps {steps}: at least 1")
    if save_every < 0:
        raise ConfigError(f"--save-every {save_every}: 0 (no frames) or more")
    if optimizer not in OPTIMIZERS:
        raise ConfigError(f"--optimizer {optimizer!r}: expected one of {', '.join(OPTIMIZERS)}")
    if init not in INITS:
        raise ConfigError(f"--init {init!r}: expected one of {', '.join(INITS)}")
    if lr is not None and not lr > 0:
        raise ConfigError(f"--lr {lr}: must be > 0")
    check_layer(content_layer, "--content-layer")
    for flag, value in loss_weights.items():
        if not value >= 0:
            raise ConfigError(f"--{flag}: must be >= 0, got {value}")


def stylize(content: str | Path, style: str | Path, out: str | Path | None = None, *, size: int = 512,
            steps: int = 300, optimizer: str = "lbfgs", lr: float | None = None,
            content_weight: float = CONTENT_WEIGHT, style_weight: float = STYLE_WEIGHT, tv_weight: float = 0.0,
            style_layers: str | Mapping[str, float] | tuple[str, ...] | list[str] = STYLE_LAYERS,
            content_layer: str = CONTENT_LAYER, init: str = "content", preserve_color: bool = False,
            weights: str | Path | None = None, device: str = "auto", save_every: int = 0, seed: int = 0,
            precision: str = "fp32", progress: bool = True) -> dict[str, Any]:
    """Paint ``content`` in the style of ``style`` and save it as PNG ``out`` (default ``CONTENT.stylized.png``).

    Both images are resized so that their longer side is ``size`` px, keeping their aspect; the
    output has the content's resized size. ``weights``: None for torchvision's VGG19 file (downloaded once),
    a path, or ``"random"``. ``init`` starts from the content or from uniform noise (seeded with
    ``seed``, as are random weights). ``preserve_color`` transfers luminance only and keeps the
    content's colours. ``save_every`` N > 0 also writes every N-th step as ``frame_path(out, step)``.
    ``precision`` ``bf16`` runs VGG19 under bf16 autocast (1.9x faster at 512 px on an AVX512-BF16
    CPU, benchmarks/stylize_speed.py); the default fp32 is the reference (LBFGS builds its curvature
    estimate from differences of gradients, which bf16 makes noisier).
    Returns a summary: losses at the start and at the end, seconds, paths.
    """
    layers = parse_style_layers(style_layers)
    _check_options(size, steps, optimizer, lr, init, content_layer, save_every,
                   {"content-weight": content_weight, "style-weight": style_weight, "tv-weight": tv_weight})
    out = Path(out) if out else Path(content).with_name(Path(content).stem + ".stylized.png")
    if out.resolve() in (Path(content).resolve(), Path(style).resolve()):  # outputs never replace inputs
        raise ConfigError(f"-o {out}: is an input image; choose another output")
    if out.suffix.lower() != ".png":
        raise ConfigError(f"-o {out}: the output is a PNG; give a file name ending in .png")
    if precision not in ("fp32", "bf16"):
        raise ConfigError(f"--precision: expected fp32 or bf16, got {precision!r}")
    target = resolve_device(device)
    deepest = max([content_layer, *layers], key=LAYER_NAMES.index)
    content_image, style_image = (picture.to(target) for picture in load_pair(content, style, size, deepest))
    features = vgg19_features(deepest, weights, seed, target)
    colours = content_image
    if preserve_color:
        content_image, style_image = luminance_only(content_image, style_image)
    loss = StyleLoss(features, content_image, style_image, content_layer, layers, content_weight, style_weight,
                     tv_weight, precision)
    if init == "content":
        image = content_image.clone(memory_format=torch.contiguous_format)  # LBFGS views .grad flat
    else:
        image = torch.rand(content_image.shape, generator=torch.Generator().manual_seed(seed)).to(target)
    image.requires_grad_(True)

    def finished(picture: torch.Tensor) -> torch.Tensor:
        return with_chroma_of(picture, colours) if preserve_color else picture

    with torch.no_grad():
        start_terms = {k: v.item() for k, v in loss(image).items()}
    frames: list[str] = []
    bar = tqdm(total=steps, desc="stylize", file=sys.stderr, disable=None if progress else True, leave=False,
               dynamic_ncols=True)

    def on_step(step: int, terms: dict[str, torch.Tensor]) -> None:
        bar.update(1)
        if step % 10 == 0 or step == steps:  # .item() is a host-device sync: not every step
            bar.set_postfix({k: f"{v.item():.3g}" for k, v in terms.items()})
        if save_every and step % save_every == 0:
            path = frame_path(out, step)
            with torch.no_grad():
                blob = png_bytes(finished(image.clamp(0, 1)))
            atomic_write(path, blob)
            frames.append(str(path))

    started = time.perf_counter()
    try:
        image = optimize(image, loss, steps, optimizer, lr, on_step)
    finally:
        bar.close()
    with torch.no_grad():
        end_terms = {k: v.item() for k, v in loss(image).items()}  # sync: also waits for the last step
    seconds = time.perf_counter() - started
    blob = png_bytes(finished(image))
    atomic_write(out, blob)
    return {
        "output": str(out), "content": str(content), "style": str(style),
        "size": [content_image.shape[3], content_image.shape[2]], "steps": steps, "optimizer": optimizer,
        "lr": DEFAULT_LR[optimizer] if lr is None else lr, "weights": str(weights_path(weights) or "random"),
        "device": str(target), "content_layer": content_layer, "style_layers": layers,
        "content_weight": content_weight, "style_weight": style_weight, "tv_weight": tv_weight, "init": init,
        "preserve_color": preserve_color, "seed": seed, "precision": precision, "initial_losses": start_terms, "losses": end_terms,
        "frames": frames, "seconds": seconds, "seconds_per_step": seconds / steps,
    }
