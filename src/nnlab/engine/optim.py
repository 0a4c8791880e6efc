"""Optimizers with the usual hygiene: no weight decay on biases and normalization parameters,
optional discriminative learning rates over a model's layer groups, and frozen groups.
"""
from __future__ import annotations

import inspect
from typing import Any, Sequence

import torch
from torch import nn

from nnlab.engine.choices import OPTIMIZER_CLASSES
from nnlab.errors import ConfigError


def layer_groups(model: nn.Module) -> list[nn.Module]:
    """The model's layer groups (``model.layer_groups()``, e.g. stem, body, head), or the whole model."""
    groups = model.layer_groups() if hasattr(model, "layer_groups") else None
    return list(groups) if groups else [model]


def group_names(n_groups: int) -> list[str]:
    """Names of ``n_groups`` layer groups: stem, body, head for three, else group0..groupN-1 (last: head)."""
    if n_groups == 3:
        return ["stem", "body", "head"]
    return [f"group{i}" for i in range(n_groups - 1)] + ["head"]


def freeze(model: nn.Module, names: Sequence[str]) -> list[str]:
    """Stop training the named layer groups (``requires_grad=False``); returns the frozen names.

    ``body`` means every group before the head (the backbone, as in transfer learning);
    ``stem``, ``head`` or ``groupK`` name one group. Unknown names are a ``ConfigError``.
    """
    groups = layer_groups(model)
    known = group_names(len(groups))
    frozen: set[int] = set()
    for name in names:
        if name == "body":
            frozen.update(range(len(groups) - 1))
        elif name in known:
            frozen.add(known.index(name))
        else:
            raise ConfigError(f"--freeze {name!r}: this model's layer groups are {', '.join(known)} (or body)")
    for i in frozen:
        for param in groups[i].parameters():
            param.requires_grad_(False)
    return [known[i] for i in sorted(frozen)]


def parameter_groups(model: nn.Module, weight_decay: float, lr: float | None = None,
                     lr_mult: float = 1.0, split: bool = False) -> list[dict]:
    """Optimizer parameter groups: per layer group, weights with ``weight_decay`` and 1-D
    parameters (biases, norm scales) without.

    Decaying a bias or a batch-norm scale only fights the normalization; every 1-D parameter
    is exempt (the rule AdamW users and nanoGPT apply). With ``lr_mult`` != 1, layer group k of
    n gets ``lr * lr_mult**(n-1-k)``: the head trains at ``lr``, earlier groups slower
    (discriminative learning rates). ``split`` splits by layer group even at ``lr_mult`` 1 (a
    schedule that treats the head apart needs that). Each group carries its layer group's
    ``name`` (stem, body, head, ...; ``all`` unsplit, ``rest`` for parameters outside every
    layer group, which train at ``lr``). Frozen parameters are left out.
    """
    split = split or lr_mult != 1.0
    groups = layer_groups(model) if split else [model]
    names = group_names(len(groups)) if split else ["all"]
    seen: set[int] = set()
    out: list[dict] = []
    for k, module in enumerate(groups):
        scale = lr_mult ** (len(groups) - 1 - k)
        params = [p for p in module.parameters() if id(p) not in seen]
        seen.update(id(p) for p in params)
        _add_split(out, params, weight_decay, None if lr is None else lr * scale, names[k])
    rest = [p for p in model.parameters() if id(p) not in seen]
    _add_split(out, rest, weight_decay, lr, "rest")
    return out


def _add_split(out: list[dict], params: list[nn.Parameter], weight_decay: float, lr: float | None,
               name: str) -> None:
    decay = [p for p in params if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in params if p.requires_grad and p.ndim <= 1]
    for chosen, wd in ((decay, weight_decay), (no_decay, 0.0)):
        if chosen:
            out.append({"params": chosen, "weight_decay": wd, "name": name, **({} if lr is None else {"lr": lr})})


def trainable_groups(model: nn.Module) -> list[str]:
    """Names of ``model``'s layer groups with at least one parameter that requires a gradient."""
    groups = layer_groups(model)
    return [name for name, module in zip(group_names(len(groups)), groups)
            if any(p.requires_grad for p in module.parameters())]


# The optimizers a run names, each torch's own class (the names are the engine's table
# ``choices.OPTIMIZER_CLASSES``, which the CLI and config.py read without importing torch): the
# SGD family is told apart by its momentum. Adam, RMSprop, Adagrad and Adadelta take
# ``weight_decay`` as an L2 term in the gradient; AdamW decays the weights apart from it.
OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    name: getattr(torch.optim, cls) for name, cls in OPTIMIZER_CLASSES.items()}


def optimizer_kwargs(name: str, momentum: float = 0.9, args: dict[str, Any] | None = None) -> dict[str, Any]:
    """The keyword arguments of optimizer ``name`` beyond its parameters, LR and weight decay:
    ``momentum`` for ``momentum``/``nesterov`` (plain ``sgd`` has none), then ``args`` (betas, eps,
    alpha, rho, ... as ``--set optimizer_args.NAME=VALUE``), each checked against torch's signature."""
    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}")
    kwargs: dict[str, Any] = {"momentum": momentum} if name in ("momentum", "nesterov") else {}
    if name == "nesterov":
        kwargs["nesterov"] = True
    accepted = [key for key in inspect.signature(OPTIMIZERS[name]).parameters
                if key not in ("params", "lr", "weight_decay")]
    for key, value in (args or {}).items():
        if key not in accepted:
            raise ConfigError(f"optimizer_args.{key}: {name} takes {', '.join(accepted)} "
                              "(lr and weight_decay are settings of their own)")
        kwargs[key] = tuple(value) if isinstance(value, list) else value
    return kwargs


def check_optimizer(name: str, momentum: float = 0.9, args: dict[str, Any] | None = None) -> None:
    """A ``ConfigError`` naming the problem unless torch builds optimizer ``name`` with these arguments."""
    kwargs = optimizer_kwargs(name, momentum, args)
    try:
        OPTIMIZERS[name]([torch.zeros(1, requires_grad=True)], lr=1e-3, **kwargs)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"optimizer {name} with {kwargs}: {error}") from None


def create_optimizer(name: str, model: nn.Module, lr: float, weight_decay: float,
                     momentum: float = 0.9, lr_mult: float = 1.0, split: bool = False,
                     args: dict[str, Any] | None = None) -> torch.optim.Optimizer:
    """Optimizer ``name`` (one of ``OPTIMIZERS``) over ``parameter_groups``: ``sgd`` is plain SGD,
    ``momentum`` and ``nesterov`` add ``momentum``; ``args`` are the optimizer's own arguments."""
    kwargs = optimizer_kwargs(name, momentum, args)
    groups = parameter_groups(model, weight_decay, lr, lr_mult, split)
    if not groups:
        raise ConfigError("nothing to train: every parameter is frozen (see --freeze)")
    try:
        return OPTIMIZERS[name](groups, lr=lr, **kwargs)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"optimizer {name} with {kwargs}: {error}") from None
