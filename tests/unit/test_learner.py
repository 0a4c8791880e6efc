"""The engine on a tiny synthetic problem (fastai's synth_learner idea): milliseconds per test."""
import json

import pytest
import torch
from torch import nn

from nnlab.engine.callbacks import CheckpointCallback, EarlyStopping, MetricsLog
from nnlab.engine.checkpoint import load_checkpoint
from nnlab.engine.learner import Callback, CancelBatchException, Learner, resolve_precision
from nnlab.engine.optim import create_optimizer, parameter_groups


def synth_batches(n=512, batch=64, seed=0):
    """Two Gaussian blobs in 2-D: linearly separable, so a learner must reach ~100%."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.randn(n, 2, generator=g) * 0.5 + (y[:, None] * 2 - 1) * 2.0
    return [(x[i:i + batch], y[i:i + batch]) for i in range(0, n, batch)]


def synth_learner(callbacks=(), lr=0.1, **kwargs):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    return Learner(model, synth_batches(), synth_batches(seed=1), loss_fn=nn.CrossEntropyLoss(), optimizer=opt,
                   callbacks=callbacks, precision="fp32", **kwargs)


def test_fit_learns_a_separable_problem():
    learner = synth_learner()
    history = learner.fit(3)
    assert len(history) == 3
    assert history[-1]["valid_acc"] > 0.97
    assert history[-1]["train_loss"] < history[0]["train_loss"]


class Recorder(Callback):
    def __init__(self):
        self.events = []

    def __getattribute__(self, name):
        if name.startswith(("before_", "after_")):
            self.events.append(name)
        return object.__getattribute__(self, name)


def test_events_fire_in_order():
    rec = Recorder()
    synth_learner([rec]).fit(1)
    ev = [e for e in rec.events]
    assert ev[0] == "before_fit" and ev[-1] == "after_fit"
    first_batch = ev[ev.index("before_batch"):ev.index("after_batch") + 1]
    assert first_batch == ["before_batch", "after_loss", "after_step", "after_batch"]
    assert ev.index("after_train") < ev.index("after_validate") < ev.index("after_epoch")


def test_cancel_batch_skips_the_update():
    class SkipAll(Callback):
        def after_loss(self):
            raise CancelBatchException()

    learner = synth_learner([SkipAll()])
    before = [p.clone() for p in learner.model.parameters()]
    learner.fit(1)
    assert all(torch.equal(a, b) for a, b in zip(before, learner.model.parameters()))
    assert learner.step == 0


def test_scheduler_is_stepped_once_per_batch():
    learner = synth_learner()
    learner.scheduler = torch.optim.lr_scheduler.OneCycleLR(learner.optimizer, 0.1, total_steps=16)
    learner.fit(2)
    assert learner.step == 16 and learner.scheduler.last_epoch == 16


def test_gradient_clipping_bounds_the_update():
    learner = synth_learner(lr=1.0, clip=1e-3)
    before = [p.clone() for p in learner.model.parameters()]
    learner.train_batches = learner.train_batches[:1]
    learner.fit(1)
    step = torch.cat([(a - b).flatten() for a, b in zip(learner.model.parameters(), before)])
    assert step.norm() <= 1e-3 * 1.0001


def test_metrics_log_and_checkpoints(tmp_path):
    learner = synth_learner()
    state = lambda: {"model": learner.model.state_dict(), "optimizer": learner.optimizer.state_dict()}  # noqa: E731
    learner.callbacks += [MetricsLog(tmp_path / "metrics.jsonl"), CheckpointCallback(tmp_path, state)]
    for cb in learner.callbacks:
        cb.learner = learner
    learner.fit(2)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert {"train_loss", "train_acc", "valid_loss", "valid_acc", "lr", "seconds"} <= rows[0].keys()
    last = load_checkpoint(tmp_path / "last.pt")
    best = load_checkpoint(tmp_path / "best.pt")
    assert last["epoch"] == 2 and best["best"]["score"] == max(r["valid_acc"] for r in rows)
    model = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 2))
    model.load_state_dict(last["model"])
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), learner.model.parameters()))


def test_early_stopping_stops_when_the_metric_stalls():
    learner = synth_learner([EarlyStopping(patience=2, monitor="valid_loss")], lr=0.0)
    history = learner.fit(10)
    assert len(history) == 3  # first epoch sets the best, two without improvement stop the fit


def test_predict_returns_probabilities_in_order():
    learner = synth_learner()
    learner.fit(1)
    probs, targets = learner.predict(synth_batches(seed=1))
    assert probs.shape == (512, 2) and torch.allclose(probs.sum(1), torch.ones(512))
    assert torch.equal(targets, torch.cat([y for _, y in synth_batches(seed=1)]))


def test_weight_decay_skips_biases_and_norms():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    decay, no_decay = parameter_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    assert isinstance(create_optimizer("sgd", model, 0.1, 0.1), torch.optim.SGD)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_explicit_precision_is_kept(precision):
    assert resolve_precision(precision, torch.device("cpu")) == precision


def test_auto_precision_on_cpu_matches_native_bf16_support():
    native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert resolve_precision("auto", torch.device("cpu")) == ("bf16" if native else "fp32")


def test_held_memory_is_reused_instead_of_taken_from_the_kernel_again():
    """After ``hold_freed_memory`` (which ``Learner.fit`` calls on the CPU), blocks like a step's activations,
    freed together and allocated again, come from the heap: no page faults after the first round. With
    glibc's own thresholds every round re-faults all 32 MiB (8,160 faults), as fashion-cnn's first epoch did."""
    import ctypes
    import platform
    import resource

    from nnlab.engine.learner import hold_freed_memory

    held = hold_freed_memory()
    assert held == (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc")
    if not held:
        return
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
    size, faults = 8 * 2 ** 20, []
    for _ in range(4):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        blocks = [libc.malloc(size) for _ in range(4)]
        for block in blocks:
            ctypes.memset(block, 1, size)
        for block in blocks:
            libc.free(block)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    assert max(faults[1:]) < 100, faults  # 4 x 8 MiB = 8,192 pages a round if given back
