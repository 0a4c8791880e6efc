"""fashion-cnn trained by nnlab and by the frameworks users would pick instead, side by side.

The same network (nnlab's ``cnn``: widths 16-32-64, conv -> max-pool -> batch norm -> ReLU,
hidden-256 head; parameter counts checked equal), the same 58,000 / 2,000 split of the training
images (nnlab's seeded stratified split), AdamW at lr 1e-2 with weight decay 5e-4 off the 1-D
parameters, torch's one-cycle (25% warm-up, beta1 cycled 0.95 -> 0.85 where the framework
can), label smoothing 0.1, batch 128, random horizontal flips, bf16 autocast (what nnlab's
``precision=auto`` picks on a CPU with AMX / AVX512-BF16), 6 epochs (nnlab's shortest one-cycle
past 92%), validation on the 2,000 after every epoch, no test-time augmentation; test accuracy
on the 10,000 test images at the end. Each run is one process, back to back:

- ``nnlab``: ``nnlab train fashion-cnn --epochs 6 --set tta=false`` (main virtualenv);
- ``lightning``: a ``LightningModule`` and ``Trainer.fit``;
- ``fastai``: ``Learner.fit_one_cycle``;
- ``keras``: Keras 3 on the torch backend, ``model.fit``;

each peer twice: ``default``, its documented data path (torchvision's ``FashionMNIST`` with
``RandomHorizontalFlip`` + ``ToTensor`` + ``Normalize`` in a ``DataLoader`` for Lightning and
fastai; NumPy arrays and a ``RandomFlip`` layer for Keras), and ``best``: the whole split held
as one normalized tensor, flipped and sliced a batch at a time (nnlab's own data path) through a
``DataLoader`` of whole batches, channels-last where the framework keeps it. The peers run in
their own virtualenv (``make bench-peers``: build/peers-venv); a peer that is not installed
there is left out with the reason. Peak memory is each process's maximum resident set.
The last stdout line is JSON.

    make bench-peers                  # sets up build/peers-venv, then runs this under the bench lock
    .venv/bin/python benchmarks/peers.py [--peers lightning,fastai,keras] [--epochs 6]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEERS = ("lightning", "fastai", "keras")
TARGET = 0.92
# The network every framework trains: fashion-cnn's widths when these runs were measured (the
# recipe has since widened to 32-64-128 for its 115 s budget); nnlab's run is pinned to them.
WIDTHS = (16, 32, 64)
BATCH, LR, WD, SMOOTHING, PCT_START = 128, 1e-2, 5e-4, 0.1, 0.25
MEAN, STD = 0.2860, 0.3530


# ---- the worker side: runs in the peers' virtualenv, imports no nnlab ----

def fashion_cnn():
    """nnlab's ``cnn(widths=(16, 32, 64), head_hidden=256, dropout=0)`` in plain torch."""
    from torch import nn

    def stage(c_in: int, c_out: int) -> list:
        return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.MaxPool2d(2), nn.BatchNorm2d(c_out), nn.ReLU()]
    return nn.Sequential(*stage(1, 16), *stage(16, 32), *stage(32, 64), nn.AdaptiveMaxPool2d(3), nn.Flatten(),
                         nn.Linear(576, 256, bias=False), nn.BatchNorm1d(256), nn.ReLU(), nn.Linear(256, 10))


def param_groups(model) -> list[dict]:
    """Weight decay on the weights of convolutions and linear layers, none on 1-D parameters (as nnlab)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.ndim > 1], "weight_decay": WD},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]


class WholeBatches:
    """The 'best' data path: normalized float images in memory; ``__getitem__`` takes a batch of
    indices and returns the batch, flipped at random per image for training (one tensor op each)."""

    def __init__(self, images, labels, train: bool, channels_last: bool, nhwc: bool = False):
        import torch
        self.x = ((images.float() / 255 - MEAN) / STD)  # [N, 1, 28, 28]
        self.y = labels
        self.train, self.channels_last, self.nhwc = train, channels_last, nhwc
        self.gen = torch.Generator().manual_seed(0)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index):
        import torch
        x = self.x[index]
        if self.train:
            flip = torch.rand(len(x), generator=self.gen) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
        if self.nhwc:
            return x.permute(0, 2, 3, 1).contiguous(), self.y[index]
        return (x.contiguous(memory_format=torch.channels_last) if self.channels_last else x), self.y[index]


def loaders(work: Path, path: str, nhwc: bool = False):
    """Train, valid and test ``DataLoader``s of the split, by the ``default`` or ``best`` path."""
    import torch
    from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler, Subset
    split = torch.load(work / "split.pt", weights_only=True)
    if path == "default":
        from torchvision import datasets, transforms
        norm = [transforms.ToTensor(), transforms.Normalize((MEAN,), (STD,))]
        train_tf = transforms.Compose([transforms.RandomHorizontalFlip(), *norm])
        full = datasets.FashionMNIST(work, train=True, download=False, transform=train_tf)
        plain = datasets.FashionMNIST(work, train=True, download=False, transform=transforms.Compose(norm))
        test = datasets.FashionMNIST(work, train=False, download=False, transform=transforms.Compose(norm))
        return (DataLoader(Subset(full, split["train"].tolist()), batch_size=BATCH, shuffle=True, drop_last=True),
                DataLoader(Subset(plain, split["valid"].tolist()), batch_size=1000),
                DataLoader(test, batch_size=1000))

    def whole(images, labels, train: bool) -> DataLoader:
        data = WholeBatches(images, labels, train, channels_last=not nhwc, nhwc=nhwc)
        sampler = RandomSampler(range(len(labels))) if train else SequentialSampler(range(len(labels)))
        return DataLoader(data, sampler=BatchSampler(sampler, BATCH if train else 1000, drop_last=train),
                          batch_size=None)
    tr, va = split["train"], split["valid"]
    return (whole(split["images"][tr], split["labels"][tr], True), whole(split["images"][va], split["labels"][va], False),
            whole(split["test_images"], split["test_labels"], False))


def test_accuracy(model, test, channels_last: bool = False) -> float:
    import torch
    model.eval()
    right = seen = 0
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        for x, y in test:
            x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
            right += (model(x).argmax(1) == y).sum().item()
            seen += len(y)
    return right / seen


def run_lightning(work: Path, path: str, epochs: int) -> dict:
    import torch
    import pytorch_lightning as pl
    train, valid, test = loaders(work, path)
    steps = epochs * len(train)
    best = path == "best"

    class LitCNN(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = fashion_cnn()
            if best:
                self.model = self.model.to(memory_format=torch.channels_last)
            self.loss = torch.nn.CrossEntropyLoss(label_smoothing=SMOOTHING)

        def forward(self, x):
            return self.model(x)

        def training_step(self, batch, _):
            x, y = batch
            return self.loss(self.model(x), y)

        def validation_step(self, batch, _):
            x, y = batch
            self.log("valid_acc", (self.model(x).argmax(1) == y).float().mean(), prog_bar=False)

        def configure_optimizers(self):
            optimizer = torch.optim.AdamW(param_groups(self.model), lr=LR)
            scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=LR, total_steps=steps, pct_start=PCT_START)
            return [optimizer], [{"scheduler": scheduler, "interval": "step"}]

    torch.manual_seed(0)
    module = LitCNN()
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, precision="bf16-mixed", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    start = time.perf_counter()
    trainer.fit(module, train, valid)
    seconds = time.perf_counter() - start
    return {"train_s": seconds, "test_accuracy": test_accuracy(module.model, test, best), "version": pl.__version__,
            "params": sum(p.numel() for p in module.model.parameters()), "images": steps * BATCH}


def run_fastai(work: Path, path: str, epochs: int) -> dict:
    import torch
    import fastai
    from fastai.data.core import DataLoaders
    from fastai.learner import Learner
    from fastai.losses import CrossEntropyLossFlat
    from fastai.metrics import accuracy
    from fastai.optimizer import Adam
    import fastai.callback.schedule  # noqa: F401 - adds Learner.fit_one_cycle
    train, valid, test = loaders(work, path)
    torch.manual_seed(0)
    model = fashion_cnn()
    if path == "best":
        model = model.to(memory_format=torch.channels_last)
    # fastai's MixedPrecision callback autocasts on 'cuda' only (fastai 2.8.12), so on a CPU the
    # model's own forward autocasts to bf16; fastai's Adam decays weights decoupled (true_wd:
    # AdamW) and, by default, not those of batch norm and biases.
    learn = Learner(DataLoaders(train, valid), CPUAutocast(model),
                    loss_func=CrossEntropyLossFlat(label_smoothing=SMOOTHING), opt_func=Adam, metrics=accuracy)
    learn.recorder.silent = True
    with learn.no_bar():
        start = time.perf_counter()
        learn.fit_one_cycle(epochs, lr_max=LR, wd=WD, pct_start=PCT_START, div=25.0, div_final=1e4,
                            moms=(0.95, 0.85, 0.95))
        seconds = time.perf_counter() - start
    return {"train_s": seconds, "test_accuracy": test_accuracy(model, test, path == "best"),
            "version": fastai.__version__, "params": sum(p.numel() for p in model.parameters()),
            "images": epochs * len(train) * BATCH}


def cpu_autocast_class():
    import torch

    class CPUAutocastModule(torch.nn.Module):
        """``model`` with its forward under bf16 autocast on the CPU, logits in fp32."""

        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return self.model(x).float()
    return CPUAutocastModule


def CPUAutocast(model):  # noqa: N802 - builds a module
    return cpu_autocast_class()(model)


def run_keras(work: Path, path: str, epochs: int) -> dict:
    os.environ["KERAS_BACKEND"] = "torch"
    import numpy as np
    import keras
    import torch
    from keras import layers
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    keras.utils.set_random_seed(0)
    split = torch.load(work / "split.pt", weights_only=True)
    steps_per_epoch = len(split["train"]) // BATCH
    total = epochs * steps_per_epoch

    class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
        """torch's OneCycleLR learning rate (half cosines up and down); Keras' AdamW cannot cycle beta1."""

        def __call__(self, step):
            ops = keras.ops
            step = ops.cast(step, "float32")
            warm = PCT_START * total - 1
            up = LR / 25 + (LR - LR / 25) * (1 - ops.cos(math.pi * ops.minimum(step / warm, 1.0))) / 2
            t = ops.clip((step - warm) / (total - 1 - warm), 0.0, 1.0)
            low = LR / 25 / 1e4
            down = low + (LR - low) * (1 + ops.cos(math.pi * t)) / 2
            return ops.where(step <= warm, up, down)

    def bn():  # torch's batch norm: momentum 0.1 (Keras counts 1 - 0.1), eps 1e-5
        return layers.BatchNormalization(momentum=0.9, epsilon=1e-5)
    inputs = keras.Input((28, 28, 1))
    x = layers.RandomFlip("horizontal")(inputs) if path == "default" else inputs
    for width in WIDTHS:
        x = layers.ReLU()(bn()(layers.MaxPooling2D(2)(layers.Conv2D(width, 3, padding="same", use_bias=False)(x))))
    x = layers.Flatten()(x)
    x = layers.ReLU()(bn()(layers.Dense(256, use_bias=False)(x)))
    outputs = layers.Dense(10, dtype="float32")(x)
    model = keras.Model(inputs, outputs)
    optimizer = keras.optimizers.AdamW(learning_rate=OneCycle(), weight_decay=WD)
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    model.compile(optimizer=optimizer, loss=keras.losses.CategoricalCrossentropy(from_logits=True,
                                                                                 label_smoothing=SMOOTHING),
                  metrics=["accuracy"])

    def arrays(images, labels):
        x = ((images.float().numpy() / 255 - MEAN) / STD).transpose(0, 2, 3, 1)  # NHWC
        return x.astype("float32"), np.eye(10, dtype="float32")[labels.numpy()]
    tr, va = split["train"], split["valid"]
    x_valid, y_valid = arrays(split["images"][va], split["labels"][va])
    x_test, y_test = arrays(split["test_images"], split["test_labels"])
    start = time.perf_counter()
    if path == "default":
        x_train, y_train = arrays(split["images"][tr], split["labels"][tr])
        model.fit(x_train, y_train, batch_size=BATCH, epochs=epochs, validation_data=(x_valid, y_valid),
                  shuffle=True, verbose=0)
    else:
        model.fit(keras_batches(split["images"][tr], split["labels"][tr]), epochs=epochs,
                  validation_data=(x_valid, y_valid), verbose=0)
    seconds = time.perf_counter() - start
    logits = model.predict(x_test, batch_size=1000, verbose=0)
    return {"train_s": seconds, "test_accuracy": float((logits.argmax(1) == y_test.argmax(1)).mean()),
            "version": keras.__version__, "images": total * BATCH,
            "params": int(sum(np.prod(w.shape) for w in model.trainable_weights))}


def keras_batches(images, labels):
    """The 'best' path for Keras: a ``keras.utils.PyDataset`` of whole NHWC batches from one
    normalized tensor, flipped per image, in a new order each epoch."""
    import keras
    import torch

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.data = WholeBatches(images, labels, True, channels_last=False, nhwc=True)
            self.onehot = torch.eye(10)[labels]
            self.on_epoch_end()

        def __len__(self) -> int:
            return len(labels) // BATCH

        def __getitem__(self, i):
            index = self.order[i * BATCH:(i + 1) * BATCH]
            x, _ = self.data[index]
            return x.numpy(), self.onehot[index].numpy()

        def on_epoch_end(self) -> None:
            self.order = torch.randperm(len(labels), generator=self.data.gen)
    return Batches()


RUNNERS = {"lightning": run_lightning, "fastai": run_fastai, "keras": run_keras}


def worker(name: str, path: str, work: Path, epochs: int) -> None:
    import torch
    torch.set_num_threads(int(os.environ.get("PEERS_THREADS", torch.get_num_threads())))
    result = RUNNERS[name](work, path, epochs)
    result["images_per_s"] = result["images"] / result["train_s"]
    result["torch"] = torch.__version__
    print(json.dumps(result), flush=True)


# ---- the orchestrator: main virtualenv (nnlab's split and its own run) ----

def prepare(work: Path, limit: int | None = None) -> int:
    """Write the split (nnlab's seeded stratified split of fashion-cnn) and torchvision's raw files
    into ``work``; returns the parameter count of nnlab's fashion-cnn network."""
    import torch
    from nnlab.commands.speedrun_baselines import torchvision_root
    from nnlab.data.batches import stratified_split
    from nnlab.data.vision import load_image_dataset
    from nnlab.models import create_model
    from nnlab.recipes import get_recipe
    config = get_recipe("fashion-cnn").config
    data = load_image_dataset("fashion-mnist")
    train_idx, valid_idx = stratified_split(data.train_labels, config.valid_fraction,
                                            torch.Generator().manual_seed(config.seed))
    train_idx = train_idx[:limit]  # --limit: a quick check of the peers' code, not a measurement
    torch.save({"train": train_idx, "valid": valid_idx, "images": data.train_images, "labels": data.train_labels,
                "test_images": data.test_images, "test_labels": data.test_labels}, work / "split.pt")
    torchvision_root(work)
    model = create_model(config.model, n_classes=10, **{**config.model_args, "widths": WIDTHS})
    return sum(p.numel() for p in model.parameters())


def timed(command: list[str], env: dict | None = None, timeout: float = 3600) -> tuple[int, str, str, float, int]:
    """Run ``command``: exit code, stdout, stderr, wall seconds, peak resident memory (MiB) of the process."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        return (process.returncode, out.read().decode(), err.read().decode(), time.perf_counter() - start,
                round(usage.ru_maxrss / 1024))


def run_nnlab(work: Path, epochs: int) -> dict:
    command = [str(ROOT / ".venv" / "bin" / "nnlab"), "train", "fashion-cnn", "--epochs", str(epochs),
               "--set", "tta=false", "--set", f"model_args.widths={WIDTHS}", "--out", str(work / "nnlab-run"), "--json"]
    code, out, err, wall, peak = timed(command)
    if code:
        return {"error": err.strip().splitlines()[-1:]}
    summary = json.loads(out)
    return {"train_s": summary["train_seconds"], "test_accuracy": summary["test_accuracy"],
            "images_per_s": summary["images_per_s"], "peak_mib": peak, "wall_s": wall, "version": "nnlab"}


def installed(python: Path, peer: str) -> str | None:
    """Why ``peer`` cannot run in the peers' virtualenv, or None."""
    module = {"lightning": "pytorch_lightning", "fastai": "fastai", "keras": "keras"}[peer]
    if not python.exists():
        return f"{python} not found: run `make bench-peers`"
    probe = subprocess.run([str(python), "-c", f"import torch, {module}; print(torch.__version__)"],
                           capture_output=True, text=True, env={**os.environ, "KERAS_BACKEND": "torch"})
    if probe.returncode:
        return f"not importable beside torch in {python.parent.parent}: {probe.stderr.strip().splitlines()[-1:]}"
    return None


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", default=",".join(PEERS))
    parser.add_argument("--paths", default="default,best")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--python", type=Path, default=ROOT / "build" / "peers-venv" / "bin" / "python",
                        help="the peers' virtualenv's Python (make bench-peers)")
    parser.add_argument("--work", type=Path)
    parser.add_argument("--worker", nargs=2, metavar=("PEER", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="peers-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.worker:
        worker(args.worker[0], args.worker[1], work, args.epochs)
        return {}
    expected_params = prepare(work)
    rows = {"nnlab": run_nnlab(work, args.epochs)}
    print(json.dumps({"nnlab": rows["nnlab"]}), file=sys.stderr, flush=True)
    left_out = {}
    for peer in [p for p in args.peers.split(",") if p]:
        why = installed(args.python, peer)
        if why:
            left_out[peer] = why
            continue
        for path in [p for p in args.paths.split(",") if p]:
            command = [str(args.python), __file__, "--worker", peer, path, "--work", str(work), "--epochs", str(args.epochs)]
            code, out, err, wall, peak = timed(command, env={**os.environ, "KERAS_BACKEND": "torch"})
            lines = [line for line in out.splitlines() if line.startswith("{")]
            if code or not lines:
                rows[f"{peer}-{path}"] = {"error": err.strip().splitlines()[-3:], "exit_code": code}
            else:
                row = json.loads(lines[-1])
                row.update(peak_mib=peak, wall_s=wall, same_params=row["params"] == expected_params)
                rows[f"{peer}-{path}"] = row
            print(json.dumps({f"{peer}-{path}": rows[f"{peer}-{path}"]}), file=sys.stderr, flush=True)
    base = rows["nnlab"]
    for name, row in rows.items():
        if "train_s" in row:
            row["reached_92"] = row["test_accuracy"] >= TARGET
            if "train_s" in base:
                row["time_ratio_to_nnlab"] = round(row["train_s"] / base["train_s"], 2)
                row["speed_ratio_to_nnlab"] = round(row["images_per_s"] / base["images_per_s"], 3)
                row["memory_ratio_to_nnlab"] = round(row["peak_mib"] / base["peak_mib"], 2)
            for key in ("train_s", "images_per_s", "wall_s"):
                row[key] = round(row[key], 1)
    result = {"command": "benchmarks/peers.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "epochs": args.epochs, "threads": os.environ.get("PEERS_THREADS"), "rows": rows, "left_out": left_out}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
