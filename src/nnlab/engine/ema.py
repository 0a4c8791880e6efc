"""An exponential moving average of the weights (Polyak averaging), validated and saved in their place.

After every optimizer step ``WeightEMA`` moves a shadow copy of the model's state toward the
trained weights: ``shadow <- shadow + (1 - d) * (weights - shadow)``, on every floating-point
tensor of the state dict (parameters and batch-norm running statistics alike, as timm's
``ModelEmaV2`` does; integer counters are copied). The decay warms up as
``d = min(decay, (1 + n) / (10 + n))`` after ``n`` updates (TensorFlow's
``ExponentialMovingAverage(num_updates=...)``), so the early average is not dominated by the
random initialization.

Each epoch the average takes the trained weights' place from the end of training through the
checkpoint: validation scores the average, and ``best.pt``/``last.pt`` hold it as their
``model`` entry, so eval, predict, serve and export use the averaged weights with no change.
The trained weights go back into the model before the next epoch trains, and checkpoints keep
them as ``live_model`` (with the update count in ``ema``), so a resumed run continues exactly.
The fit ends with the average in the model.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from nnlab.engine.learner import Callback
from nnlab.errors import ConfigError


def check_decay(decay: float) -> None:
    """A ``ConfigError`` unless ``decay`` is 0 (no average) or in (0, 1)."""
    if not 0.0 <= decay < 1.0:
        raise ConfigError(f"ema: expected a decay in [0, 1) (0: no average; e.g. 0.999), got {decay}")


class WeightEMA(Callback):
    """The moving average of ``model``'s state dict, updated after every step (see the module docstring)."""

    order = 72  # after the checkpoint (70), which saves the average; before early stopping (80) ends the fit

    def __init__(self, model: nn.Module, decay: float) -> None:
        check_decay(decay)
        self.model = model
        self.decay = decay
        self.updates = 0
        self.shadow: dict[str, torch.Tensor] = {}  # taken at the start of the fit, once the model is on its device
        self.live: dict[str, torch.Tensor] | None = None  # the trained weights while the average is in the model

    def start(self) -> None:
        """The average starts as a copy of the model's state (its device and memory layout too)."""
        if not self.shadow:
            self.shadow = {key: value.detach().clone() for key, value in self.model.state_dict().items()}
            self._floating = [key for key, value in self.shadow.items() if value.is_floating_point()]

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        """Move the average toward the model's state: one fused lerp over every floating-point tensor."""
        state = self.model.state_dict()
        weight = 1.0 - self.current_decay()
        torch._foreach_lerp_([self.shadow[key] for key in self._floating], [state[key] for key in self._floating],
                             weight)
        for key, value in state.items():
            if key not in self._floating:
                self.shadow[key].copy_(value)
        self.updates += 1

    def before_fit(self) -> None:
        self.start()

    def after_step(self) -> None:
        self.update()

    def after_train(self) -> None:
        """The average takes the trained weights' place for validation and the checkpoint."""
        self.live = {key: value.detach().clone() for key, value in self.model.state_dict().items()}
        self.model.load_state_dict(self.shadow)

    def after_epoch(self) -> None:
        """The trained weights go back for the next epoch's training."""
        self.swap_back()

    def after_fit(self) -> None:
        """The fit ends with the average in the model (the run kit then loads the best epoch's)."""
        self.live = None
        self.model.load_state_dict(self.shadow)

    def swap_back(self) -> None:
        if self.live is not None:
            self.model.load_state_dict(self.live)
            self.live = None

    def state(self) -> dict[str, Any]:
        """What a checkpoint holds for the average: ``model`` (the average itself), ``live_model``
        (the trained weights) and ``ema`` (decay and update count)."""
        live = self.live if self.live is not None else self.model.state_dict()
        return {"model": self.shadow, "live_model": live, "ema": {"decay": self.decay, "updates": self.updates}}

    def restore(self, checkpoint: dict[str, Any]) -> None:
        """Continue from ``checkpoint``: its ``model`` is the average and its ``live_model`` the trained
        weights; a checkpoint of a run without the average starts one from its weights."""
        self.start()
        if "live_model" not in checkpoint:
            return
        for key, value in checkpoint["model"].items():
            self.shadow[key].copy_(value)
        self.model.load_state_dict(checkpoint["live_model"])
        self.updates = int(checkpoint.get("ema", {}).get("updates", 0))


def resume_weights(model: nn.Module, checkpoint: dict[str, Any], ema: WeightEMA | None) -> None:
    """After a resumed run's checkpoint is loaded: the average continues (``ema``), or, when the run
    continues without one, training goes on from the trained weights rather than their average."""
    if ema is not None:
        ema.restore(checkpoint)
    elif "live_model" in checkpoint:
        model.load_state_dict(checkpoint["live_model"])
