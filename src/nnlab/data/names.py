"""Surnames by language: a folder of ``<Language>.txt`` files, one name a line (the PyTorch tutorial's format).

Names are folded to ASCII the tutorial's way (Unicode NFD, combining marks dropped, then only
``ALPHABET``'s characters kept), encoded as ids ``1..len(ALPHABET)`` (0 is padding), and
batched as padded ``[N, L]`` tensors that the model packs. The alphabet is saved with the
checkpoint, so a run never depends on this module's constant staying the same.
"""
from __future__ import annotations

import os
import string
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch

from nnlab.errors import DataError

ALPHABET = string.ascii_letters + " .,;'"


def fold_ascii(name: str, alphabet: str = ALPHABET) -> str:
    """``name`` without accents and without characters outside ``alphabet`` ("Ślusàrski" -> "Slusarski")."""
    decomposed = unicodedata.normalize("NFD", name)
    return "".join(c for c in decomposed if unicodedata.category(c) != "Mn" and c in alphabet)


def encode_names(names: Sequence[str], alphabet: str = ALPHABET) -> torch.Tensor:
    """Padded ids ``[N, L]`` (``L`` the longest name, 0 after each name's end) of already folded names."""
    index = {c: i + 1 for i, c in enumerate(alphabet)}
    width = max((len(n) for n in names), default=1)
    ids = torch.zeros(len(names), max(width, 1), dtype=torch.long)  # [N, L]
    for row, name in enumerate(names):
        ids[row, : len(name)] = torch.tensor([index[c] for c in name], dtype=torch.long)
    return ids


@dataclass
class NamesDataset:
    """Every name (folded), its class index, the class names (sorted file stems) and where they came from."""

    names: list[str]
    labels: torch.Tensor     # int64 [N]
    classes: list[str]
    source: str


def default_names_dir() -> tuple[Path, str]:
    """``$NNLAB_DATA/names``, else ``<cache>/names``: the first that holds ``.txt`` files."""
    from nnlab.data.sources import cache_root
    places = []
    if os.environ.get("NNLAB_DATA"):
        places.append((Path(os.environ["NNLAB_DATA"]).expanduser() / "names", "$NNLAB_DATA/names"))
    places.append((cache_root() / "names", "cache"))
    for directory, label in places:
        if directory.is_dir() and any(directory.glob("*.txt")):
            return directory, f"{label} ({directory})"
    looked = "; ".join(str(d) for d, _ in places)
    raise DataError(f"names data not found (looked in: {looked}); pass --data DIR with one <Language>.txt "
                    "file per class, one name a line (the PyTorch names tutorial's data/names folder)")


def load_names(data: str | Path | None = None, alphabet: str = ALPHABET) -> NamesDataset:
    """Read every ``<Class>.txt`` of ``data`` (or the default folder); empty lines are skipped.

    A missing folder, a folder without ``.txt`` files, or a class with no usable names is a
    ``DataError`` naming it. Names that fold to nothing (no ASCII letters at all) are dropped.
    """
    if data is None:
        directory, source = default_names_dir()
    else:
        directory, source = Path(data).expanduser(), f"--data {data}"
        if not directory.is_dir():
            raise DataError(f"--data {directory}: no such directory; expected one <Language>.txt file per class")
    files = sorted(directory.glob("*.txt"))
    if not files:
        raise DataError(f"{directory}: no .txt files; expected one <Language>.txt file per class, one name a line")
    names: list[str] = []
    labels: list[int] = []
    for index, path in enumerate(files):
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            raise DataError(f"{path}: not UTF-8 text; expected one name a line") from None
        folded = [f for f in (fold_ascii(line.strip(), alphabet) for line in lines) if f]
        if not folded:
            raise DataError(f"{path}: class {path.stem!r} has no names; expected one name a line")
        names.extend(folded)
        labels.extend([index] * len(folded))
    return NamesDataset(names, torch.tensor(labels, dtype=torch.long), [p.stem for p in files], source)


class NameBatches:
    """Padded batches ``(ids [B, L], labels [B])`` of ``names``; ``L`` is the batch's longest name.

    ``shuffle`` draws a new permutation each pass; ``sample_weights`` (one per name) instead
    draws each batch's names with replacement in proportion to them (a class-balancing
    sampler). Names are encoded once; a batch is trimmed to its own longest name.
    """

    def __init__(self, names: Sequence[str], labels: torch.Tensor, batch_size: int, *, alphabet: str = ALPHABET,
                 shuffle: bool = False, sample_weights: torch.Tensor | None = None,
                 generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> None:
        self.ids = encode_names(names, alphabet)                 # [N, Lmax]
        self.lengths = (self.ids != 0).sum(1)                    # [N]
        self.labels = labels
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.sample_weights = sample_weights
        self.generator = generator
        self.device = torch.device(device)

    def __len__(self) -> int:
        return -(-len(self.labels) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        if self.sample_weights is not None:
            order = torch.multinomial(self.sample_weights, n, replacement=True, generator=self.generator)
        elif self.shuffle:
            order = torch.randperm(n, generator=self.generator)
        else:
            order = torch.arange(n)
        for start in range(0, n, self.batch_size):
            rows = order[start: start + self.batch_size]
            width = int(self.lengths[rows].max())
            yield self.ids[rows, :width].to(self.device), self.labels[rows].to(self.device)
