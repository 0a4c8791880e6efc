"""Layer-by-layer summary of a model: output shape, parameters and multiply-adds, via forward hooks.

One forward pass of a single zero image runs with a hook on every leaf module; each hook
records the module's output shape, its own parameter count and its multiply-adds for that
one image. Convolutions and linear layers count ``outputs x inputs-per-output`` multiply-adds
(a conv's output of width ``(W - F + 2P) / S + 1`` reads ``F*F*D_in/groups`` inputs per value);
other layers (norms, activations, pooling) count none, as most published numbers do.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from nnlab.errors import ConfigError

# Input size per image dataset (channels come from its statistics): what a recipe's model sees.
DATASET_SIZE = {"mnist": 28, "fashion-mnist": 28, "cifar10": 32, "cifar100": 32, "folder": 64}


def _mult_adds(module: nn.Module, output: torch.Tensor) -> int:
    """Multiply-adds of ``module`` for one image, given its output for a batch of one."""
    if isinstance(module, nn.modules.conv._ConvNd):
        per_output = (module.in_channels // module.groups) * int(torch.tensor(module.kernel_size).prod())
        return output.numel() * per_output
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    return 0


def summarize(model: nn.Module, input_shape: Sequence[int]) -> dict[str, Any]:
    """Per-layer rows (name, type, output shape, params, mult_adds) and totals for one image of ``input_shape``.

    ``input_shape`` is ``(C, H, W)`` without the batch dimension. The model is run in eval mode
    on the CPU and left as it was found (mode and hooks).
    """
    rows: list[dict[str, Any]] = []
    hooks = []

    def record(name: str):
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            out = output[0] if isinstance(output, (tuple, list)) else output
            rows.append({"name": name, "type": type(module).__name__, "output_shape": list(out.shape[1:]),
                         "params": sum(p.numel() for p in module.parameters(recurse=False)),
                         "mult_adds": _mult_adds(module, out)})
        return hook

    for name, module in model.named_modules():
        if not list(module.children()):
            hooks.append(module.register_forward_hook(record(name)))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            output = model(torch.zeros(1, *input_shape))
    except RuntimeError as error:
        raise ConfigError(f"input shape {','.join(map(str, input_shape))} does not fit the model: "
                          f"{str(error).splitlines()[0]}") from None
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    total = sum(p.numel() for p in model.parameters())
    return {"input_shape": list(input_shape), "output_shape": list(output.shape[1:]), "layers": rows,
            "total_params": total, "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "total_mult_adds": sum(r["mult_adds"] for r in rows)}


def parse_shape(text: str) -> tuple[int, ...]:
    """``"3,130,130"`` -> ``(3, 130, 130)``; anything else is a ``ConfigError``."""
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError(f"--input {text!r}: expected C,H,W as three positive integers, e.g. 3,32,32")
    return shape
