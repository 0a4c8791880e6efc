"""Scores beyond the confusion matrix: ROC-AUC from ranks, and the errors of a regression.

These sit beside ``metrics.py`` because they need scores or real values, not predicted
classes. They are plain torch, like the rest of the engine (which knows no other library);
the tests check them against scikit-learn's ``roc_auc_score`` and ``r2_score``.
"""
from __future__ import annotations

import torch
from torch import Tensor


def midranks(values: Tensor) -> Tensor:
    """1-based ranks of ``values`` [N], tied values sharing the mean of their ranks (float64)."""
    unique, inverse, counts = torch.unique(values, sorted=True, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).to(torch.float64)  # rank of the last member of each tie group
    return (ends - (counts.to(torch.float64) - 1) / 2)[inverse]


def roc_auc(scores: Tensor, positive: Tensor) -> float | None:
    """Area under the ROC curve of ``scores`` [N] for the boolean labels ``positive`` [N].

    Uses the Mann-Whitney identity: AUC is the chance that a random positive scores above a
    random negative (ties count half), which the rank sum of the positives gives in O(N log N).
    ``None`` when only one of the two labels occurs, where the AUC is undefined.
    """
    scores = scores.detach().reshape(-1).to("cpu", torch.float64)
    positive = positive.detach().reshape(-1).to("cpu", torch.bool)
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    rank_sum = midranks(scores)[positive].sum().item()
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def roc_auc_ovr(probs: Tensor, targets: Tensor) -> float | None:
    """ROC-AUC of a classifier's probabilities [N, C]: the binary AUC of class 1 when C is 2,
    else the unweighted mean of one-vs-rest AUCs over the classes present (scikit-learn's
    ``multi_class="ovr", average="macro"``); ``None`` if no class has an AUC.
    """
    if probs.shape[1] == 2:
        return roc_auc(probs[:, 1], targets == 1)
    aucs = [roc_auc(probs[:, c], targets == c) for c in range(probs.shape[1])]
    defined = [a for a in aucs if a is not None]
    return sum(defined) / len(defined) if defined else None


def regression_report(preds: Tensor, targets: Tensor) -> dict[str, float | None]:
    """MSE, RMSE, MAE and R^2 (1 - residual / total sum of squares; ``None`` for a constant target)."""
    preds = preds.detach().reshape(-1).to("cpu", torch.float64)
    targets = targets.detach().reshape(-1).to("cpu", torch.float64)
    errors = preds - targets
    mse = errors.square().mean().item()
    total = (targets - targets.mean()).square().sum().item()
    return {"mse": mse, "rmse": mse ** 0.5, "mae": errors.abs().mean().item(),
            "r2": 1 - errors.square().sum().item() / total if total > 0 else None}
