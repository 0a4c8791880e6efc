"""Class activation maps: where in the image the evidence for a class lies.

Grad-CAM (Selvaraju et al.): take a convolutional layer's activation ``A`` [K, h, w] and the
gradient of the class score with respect to it; weight each channel by its mean gradient and
keep the positive part, ``relu(sum_k mean(dy/dA_k) * A_k)``. For a head that is global average
pooling followed by a linear layer the mean gradient of channel k is exactly ``W[c, k] / (h*w)``,
so this is Zhou et al.'s CAM up to scale; for any other head (concat pooling, hidden layers)
it is its generalization. The activation and its gradient are caught with a forward hook on
the chosen layer and a tensor hook on its output, so the model's code is not touched; the
default layer is the output of ``forward_features`` (the last conv map of every nnlab model).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from matplotlib import colormaps
from matplotlib.figure import Figure
from torch import nn

from nnlab.engine.learner import predict_probs
from nnlab.errors import ConfigError
from nnlab.files import save_figure


def grad_cam(model: nn.Module, x: torch.Tensor, class_index: int | None = None,
             layer: str | None = None, tta_flip: bool = False) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Grad-CAM of one normalized image ``x`` [1, C, H, W]: (heat map [H, W] in [0, 1], probabilities, class).

    ``class_index`` None explains the predicted class. ``layer`` names a module of ``model``
    (``named_modules``) whose 4-D output is explained; None uses ``forward_features``. The
    probabilities are the prediction's, by ``predict_probs`` (with ``tta_flip``, a run's test-time
    flip, averaged with the mirrored image's), so a map's title never contradicts ``nnlab predict``;
    the map itself is of ``x`` as given.
    """
    captured: dict[str, torch.Tensor] = {}

    def keep(tensor: torch.Tensor) -> None:
        captured["activation"] = tensor
        tensor.register_hook(lambda grad: captured.__setitem__("gradient", grad))

    model.eval()
    handle = None
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)  # so the graph reaches the hooked layer even if all weights are frozen
        if layer is None:
            features = model.forward_features(x)
            keep(features)
            logits = model.forward_head(features)
        else:
            modules = dict(model.named_modules())
            if layer not in modules:
                convs = [n for n, m in modules.items() if isinstance(m, nn.Conv2d)]
                raise ConfigError(f"--layer {layer!r}: no such module; conv layers: {', '.join(convs)}")
            handle = modules[layer].register_forward_hook(lambda module, inputs, output: keep(output))
            try:
                logits = model(x)
            finally:
                handle.remove()
        activation = captured.get("activation")
        if activation is None or activation.ndim != 4:
            raise ConfigError(f"--layer {layer!r}: its output is not a [N, C, H, W] feature map")
        probs = predict_probs(model, [(x.detach(), torch.zeros(1))], x.device, tta_flip=tta_flip)[0][0]
        target = int(probs.argmax()) if class_index is None else class_index
        model.zero_grad(set_to_none=True)
        logits[0, target].backward()
    weights = captured["gradient"][0].mean(dim=(1, 2))  # [K]: mean gradient per channel
    cam = F.relu((weights[:, None, None] * activation[0].detach()).sum(0))  # [h, w]
    cam = F.interpolate(cam[None, None], size=x.shape[2:], mode="bilinear", align_corners=False)[0, 0]  # [H, W]
    peak = cam.max()
    return (cam / peak if peak > 0 else cam), probs, target


def cam_figure(image: torch.Tensor, heat: torch.Tensor, title: str) -> Figure:
    """The image (uint8 [C, H, W]) beside itself overlaid with the heat map ([H, W] in [0, 1])."""
    picture = image.permute(1, 2, 0).float().numpy() / 255.0  # [H, W, C]
    if picture.shape[2] == 1:
        picture = picture.repeat(3, axis=2)
    colour = colormaps["jet"](heat.numpy())[..., :3]
    blended = (0.55 * picture + 0.45 * colour).clip(0, 1)  # float rounding reached 1 + 1e-8: imshow warned
    fig = Figure(figsize=(6, 3.3), layout="tight")
    left, right = fig.subplots(1, 2)
    for ax, shown, label in ((left, picture, "input"), (right, blended, "class activation")):
        ax.imshow(shown, interpolation="nearest")
        ax.set_title(label, fontsize=9)
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    return fig


def overlay_png(image: torch.Tensor, heat: torch.Tensor, title: str, path: str | Path) -> Path:
    """``cam_figure`` written to ``path`` as PNG (``nnlab cam``'s picture); returns ``path``."""
    return save_figure(cam_figure(image, heat, title), path)
