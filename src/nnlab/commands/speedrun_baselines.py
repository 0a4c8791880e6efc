"""The baselines of ``nnlab speedrun --baselines``: each tutorial's loop on the task's own data.

Each function trains one of ``nnlab.lessons.tutorials``' loops, epoch by epoch, on exactly the
data nnlab's recipe reads (its files, its split for the recipe's first seed), and after every
epoch measures the task's metric on the task's held-out data; it stops at the first epoch that
reaches the target, at ``max_epochs`` (the tutorial's own length) or once ``cap_s`` seconds of
training are spent. Only training counts as time, including any validation the tutorial itself
uses (word_language_model anneals its rate on it); the stopping check after each epoch is the
benchmark's, not the tutorial's, and is not counted. Every function returns the same fields
(``until_target``'s).
"""
from __future__ import annotations

import gzip
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

from nnlab.lessons import tutorials


def reached(metric: float | None, target: float, lower_is_better: bool) -> bool:
    """Whether ``metric`` is at the target: at or below it for a loss, at or above it otherwise."""
    if metric is None:
        return False
    return metric <= target if lower_is_better else metric >= target


def until_target(train_epoch: Callable[[], None], measure: Callable[[], float], target: float,
                 lower_is_better: bool, cap_s: float, max_epochs: int) -> dict[str, Any]:
    """Train epoch by epoch until ``measure()`` reaches ``target``, ``max_epochs`` or ``cap_s`` seconds of
    training; only ``train_epoch`` is timed. Returns seconds, metric, reached, epochs, the stop's reason
    and the curve of (seconds, metric) after each epoch."""
    spent, epochs, metric, curve = 0.0, 0, None, []
    stop = "cap"
    while spent < cap_s:
        if epochs >= max_epochs:
            stop = "epochs"
            break
        start = time.perf_counter()
        train_epoch()
        spent += time.perf_counter() - start
        epochs += 1
        metric = measure()
        curve.append([round(spent, 3), round(metric, 4)])
        if reached(metric, target, lower_is_better):
            stop = "target"
            break
    return {"seconds": spent, "metric": metric, "reached": reached(metric, target, lower_is_better),
            "epochs": epochs, "stop": stop, "curve": curve}


def torchvision_root(tmp: Path, dataset: str = "fashion-mnist", data: str | Path | None = None) -> Path:
    """The IDX files of ``dataset`` (located as a recipe locates them, ``data`` first; nothing downloaded),
    decompressed where torchvision's ``FashionMNIST`` / ``MNIST`` look for them (``TMP/<Class>/raw/``)."""
    from nnlab.data.sources import locate
    from nnlab.data.vision import IDX_FILES, dataset_info
    directory, _ = locate(dataset_info(dataset).spec, data, download=False)
    raw = tmp / ("FashionMNIST" if dataset == "fashion-mnist" else "MNIST") / "raw"
    raw.mkdir(parents=True)
    for name in IDX_FILES:
        src = directory / name
        with (gzip.open(src) if src.exists() else open(directory / name.removesuffix(".gz"), "rb")) as f_in, \
                open(raw / name.removesuffix(".gz"), "wb") as f_out:
            shutil.copyfileobj(f_in, f_out)
    return tmp


def examples_mnist(config: Any, target: float, lower_is_better: bool, cap_s: float, max_epochs: int,
                   device: torch.device) -> dict[str, Any]:
    """pytorch/examples' MNIST loop on the task's images: torchvision dataset (ToTensor, Normalize by the
    dataset's statistics), DataLoader of 64, ``ExamplesNet``, Adadelta lr 1.0, StepLR gamma 0.7, seed 1;
    test accuracy on the 10,000 test images after each epoch. It trains on all 60,000 training images."""
    from torchvision import datasets, transforms

    from nnlab.data.vision import dataset_info
    info = dataset_info(config.dataset)
    with tempfile.TemporaryDirectory() as tmp:
        root = torchvision_root(Path(tmp), config.dataset, config.data)
        reader = datasets.FashionMNIST if config.dataset == "fashion-mnist" else datasets.MNIST
        tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize(info.mean, info.std)])
        train_loader = torch.utils.data.DataLoader(reader(root, train=True, download=False, transform=tf),
                                                   batch_size=64, shuffle=True)
        test_loader = torch.utils.data.DataLoader(reader(root, train=False, download=False, transform=tf),
                                                  batch_size=1000)
        torch.manual_seed(1)
        model = tutorials.ExamplesNet().to(device)
        optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)

        def train_epoch() -> None:
            tutorials.examples_train_epoch(model, train_loader, optimizer, device)
            scheduler.step()

        return until_target(train_epoch, lambda: tutorials.examples_test(model, test_loader, device), target,
                            lower_is_better, cap_s, max_epochs)


def names_tutorial(config: Any, target: float, lower_is_better: bool, cap_s: float, max_epochs: int,
                   device: torch.device) -> dict[str, Any]:
    """The names tutorial's RNN on the run's training names (the recipe's split for its seed), test accuracy
    on its test names after each epoch. On the CPU, as the tutorial runs it (one name at a time)."""
    from nnlab.data.names import load_names
    from nnlab.kinds.names import split_names
    split = split_names(load_names(config.data), config)
    data, rows = split.data, split.rows
    train_rows, test_rows = rows["train"].tolist(), rows["test"].tolist()
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    model = tutorials.TutorialRNN(len(tutorials.TUTORIAL_LETTERS), 128, len(data.classes))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.15)
    tensors = [tutorials.line_to_tensor(data.names[i]) for i in train_rows]
    targets = [torch.tensor([int(data.labels[i])]) for i in train_rows]
    test_names, test_labels = [data.names[i] for i in test_rows], data.labels[rows["test"]]

    def accuracy() -> float:
        return (tutorials.names_predict(model, test_names).argmax(1) == test_labels).float().mean().item()

    return until_target(lambda: tutorials.names_train_epoch(model, tensors, targets, optimizer, rng), accuracy,
                        target, lower_is_better, cap_s, max_epochs)


def word_language_model(config: Any, target: float, lower_is_better: bool, cap_s: float, max_epochs: int,
                        device: torch.device) -> dict[str, Any]:
    """pytorch/examples' word_language_model on the run's characters (its text, vocabulary and split):
    2x200 LSTM, 20 streams x 35, SGD lr 20 divided by 4 whenever validation (10 streams) does not
    improve, seed 1111. The metric is its best validation loss in nats per character, the pass its own
    loop makes each epoch (so counted as training)."""
    from nnlab.kinds.charlm import read_corpus
    corpus = read_corpus(config)
    train_data = tutorials.batchify(corpus.train, 20).to(device)
    val_data = tutorials.batchify(corpus.valid, 10).to(device)
    torch.manual_seed(1111)
    model = tutorials.RNNModel(len(corpus.vocab)).to(device)
    state = {"lr": 20.0, "best": None}

    def train_epoch() -> None:
        tutorials.lm_train_epoch(model, train_data, state["lr"])
        val_loss = tutorials.lm_evaluate(model, val_data)
        if state["best"] is None or val_loss < state["best"]:
            state["best"] = val_loss
        else:
            state["lr"] /= 4.0

    return until_target(train_epoch, lambda: state["best"], target, lower_is_better, cap_s, max_epochs)


def seq2seq_tutorial(config: Any, target: float, lower_is_better: bool, cap_s: float, max_epochs: int,
                     device: torch.device) -> dict[str, Any]:
    """The seq2seq tutorial on the run's pairs (the recipe's split for its seed), as characters: its
    encoder and attention decoder of 128, batches of 32 padded to the longest pair + EOS, Adam 1e-3;
    exact match of greedy outputs on the test pairs after each epoch. Test characters never seen in
    training are left out of the source (the tutorial's vocabulary would fail on them)."""
    from nnlab.kinds.translate import load_pairs, split_pairs
    pairs, source = load_pairs(config)
    rows = split_pairs(len(pairs), config, source)
    train_pairs = [pairs[i] for i in rows["train"].tolist()]
    test_pairs = [pairs[i] for i in rows["test"].tolist()]
    specials = [tutorials.SOS_TOKEN, tutorials.EOS_TOKEN]
    source_index = {c: i + len(specials) for i, c in enumerate(sorted({c for s, _ in train_pairs for c in s}))}
    target_chars = sorted({c for _, t in train_pairs for c in t})
    target_index = {c: i + len(specials) for i, c in enumerate(target_chars)}
    max_length = max(len(text) for pair in pairs for text in pair) + 1  # + EOS

    def ids(texts: list[str], index: dict[str, int]) -> torch.Tensor:
        out = torch.zeros(len(texts), max_length, dtype=torch.long)  # the tutorial pads with 0 (SOS)
        for row, text in enumerate(texts):
            known = [index[c] for c in text if c in index] + [tutorials.EOS_TOKEN]
            out[row, :len(known)] = torch.tensor(known)
        return out.to(device)

    inputs, outputs = ids([s for s, _ in train_pairs], source_index), ids([t for _, t in train_pairs], target_index)
    test_inputs = ids([s for s, _ in test_pairs], source_index)
    torch.manual_seed(config.seed)
    dataset = torch.utils.data.TensorDataset(inputs, outputs)
    loader = torch.utils.data.DataLoader(dataset, sampler=torch.utils.data.RandomSampler(dataset), batch_size=32)
    encoder = tutorials.EncoderRNN(len(source_index) + len(specials), 128).to(device)
    decoder = tutorials.AttnDecoderRNN(128, len(target_index) + len(specials), max_length).to(device)
    encoder_optimizer = torch.optim.Adam(encoder.parameters(), lr=1e-3)
    decoder_optimizer = torch.optim.Adam(decoder.parameters(), lr=1e-3)

    def exact_match() -> float:
        right = 0
        for start in range(0, len(test_pairs), 500):
            decoded = tutorials.seq2seq_decode(encoder, decoder, test_inputs[start:start + 500])
            for row, (_, reference) in zip(decoded, test_pairs[start:start + 500]):
                text = "".join(target_chars[i - len(specials)] if i >= len(specials) else "<SOS>" for i in row)
                right += text == reference
        return right / len(test_pairs)

    return until_target(lambda: tutorials.seq2seq_train_epoch(loader, encoder, decoder, encoder_optimizer,
                                                               decoder_optimizer),
                        exact_match, target, lower_is_better, cap_s, max_epochs)
