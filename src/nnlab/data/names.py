"""Surnames by language: a folder of ``<Language>.txt`` files, one name a line (the PyTorch tutorial's format).

The default folder is the tutorial's (``data/names/`` of its ``data.zip``: ``fetch_names``, which
``nnlab download names`` runs), found in ``$NNLAB_DATA/names/`` or the cache; ``--data DIR`` takes
any folder of the same format. Names are folded to ASCII the tutorial's way (Unicode NFD, combining marks dropped, then only
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

from nnlab.data.batches import shard_rows, sharded
from nnlab.data.sources import TUTORIAL_DATA_URL, cache_root, download, place_files, zip_members
from nnlab.errors import DataError

ALPHABET = string.ascii_letters + " .,;'"
# The tutorial's 18 languages of origin: data/names/<Language>.txt in its data.zip.
LANGUAGES = ("Arabic", "Chinese", "Czech", "Dutch", "English", "French", "German", "Greek", "Irish", "Italian",
             "Japanese", "Korean", "Polish", "Portuguese", "Russian", "Scottish", "Spanish", "Vietnamese")
NAMES_MEMBERS = "data/names/"
# The tutorial's files hold 20,074 names; a copy with far fewer is cut short (one of this project's
# copies once stopped Russian.txt at 3,499 of its 9,408 names: 14,164 in all).
NAMES_MIN = 20_000


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
    places = []
    if os.environ.get("NNLAB_DATA"):
        places.append((Path(os.environ["NNLAB_DATA"]).expanduser() / "names", "$NNLAB_DATA/names"))
    places.append((cache_root() / "names", "cache"))
    for directory, label in places:
        if directory.is_dir() and any(directory.glob("*.txt")):
            return directory, f"{label} ({directory})"
    looked = "; ".join(str(d) for d, _ in places)
    raise DataError(f"names data not found (looked in: {looked}); get the PyTorch tutorial's with "
                    "`nnlab download names`, or pass --data DIR with one <Language>.txt file per class, one name a line")


def count_names(files: dict[str, bytes], origin: str, min_names: int = NAMES_MIN) -> int:
    """How many names ``files`` (``<Language>.txt`` -> bytes) hold, after checking that they are the
    tutorial's set: its 18 languages, each UTF-8 with at least one name, ``min_names`` in all.

    Upstream publishes no checksum of these files, so this structure is what a download is checked
    by; anything else is a ``DataError`` naming ``origin``.
    """
    stems = sorted(name.removesuffix(".txt") for name in files if name.endswith(".txt"))
    if stems != sorted(LANGUAGES):
        missing = sorted(set(LANGUAGES) - set(stems))
        raise DataError(f"{origin}: expected the tutorial's {len(LANGUAGES)} <Language>.txt files, got "
                        f"{len(stems)}" + (f" (missing {', '.join(missing)})" if missing else ""))
    total = 0
    for language in LANGUAGES:
        try:
            lines = files[f"{language}.txt"].decode("utf-8").splitlines()
        except UnicodeDecodeError:
            raise DataError(f"{origin}: {language}.txt is not UTF-8 text") from None
        names = sum(1 for line in lines if line.strip())
        if not names:
            raise DataError(f"{origin}: {language}.txt holds no names")
        total += names
    if total < min_names:
        raise DataError(f"{origin}: {total} names, expected at least {min_names} (the tutorial's hold 20,074)")
    return total


def fetch_names(dest_dir: str | Path | None = None, url: str = TUTORIAL_DATA_URL, progress: bool = True,
                min_names: int = NAMES_MIN) -> dict[str, object]:
    """Download the tutorial's ``data.zip`` into ``dest_dir`` (default: the cache's ``names/``, where
    ``load_names`` looks), resumable and atomic (``nnlab.data.sources.download``), and extract its
    ``data/names/<Language>.txt`` files beside it.

    No checksum is published upstream, so the files are checked by ``count_names`` before any of
    them is written; a failed check removes the download. A folder that already holds a set that
    passes the check is kept without a download.
    """
    directory = Path(dest_dir).expanduser() if dest_dir is not None else cache_root() / "names"
    check = f"structure: the 18 <Language>.txt files, UTF-8, at least {min_names} names (no checksum is published)"
    present = {f"{language}.txt": directory / f"{language}.txt" for language in LANGUAGES}
    if all(path.is_file() for path in present.values()):
        try:
            total = count_names({n: p.read_bytes() for n, p in present.items()}, str(directory), min_names)
            return {"path": str(directory), "names": total, "downloaded": False, "check": check}
        except DataError:
            pass  # a bad or partial copy: fetch it again
    archive = download(url, directory / "data.zip", md5=None, progress=progress)
    members = zip_members(archive, url, NAMES_MEMBERS, "the tutorial's data.zip")
    try:
        total = count_names(members, url, min_names)
    except DataError as error:
        archive.unlink()
        raise DataError(f"{error}; the download was removed") from None
    place_files(directory, {name: data for name, data in members.items() if name.removesuffix(".txt") in LANGUAGES})
    return {"path": str(directory), "names": total, "downloaded": True, "bytes": archive.stat().st_size,
            "check": check}


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
    sampler). Names are encoded once; a batch is trimmed to its own longest name. ``shard``
    gives one rank of a distributed run its share of each pass (``nnlab.data.batches.shard_rows``).
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
        self.rank, self.world_size = 0, 1

    def shard(self, rank: int, world_size: int) -> "NameBatches":
        """These batches for rank ``rank`` of ``world_size`` processes: its share of each pass, in
        batches of ``batch_size / world_size`` (``nnlab.data.batches.sharded``)."""
        return sharded(self, rank, world_size)

    @property
    def samples(self) -> int:
        """The names one pass draws (this rank's share when distributed)."""
        return len(self.labels) // self.world_size

    def __len__(self) -> int:
        return -(-self.samples // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        if self.sample_weights is not None:
            order = torch.multinomial(self.sample_weights, n, replacement=True, generator=self.generator)
        elif self.shuffle:
            order = torch.randperm(n, generator=self.generator)
        else:
            order = torch.arange(n)
        if self.world_size > 1:
            order = shard_rows(order, self.rank, self.world_size)
            n = len(order)
        for start in range(0, n, self.batch_size):
            rows = order[start: start + self.batch_size]
            width = int(self.lengths[rows].max())
            yield self.ids[rows, :width].to(self.device), self.labels[rows].to(self.device)


def deduplicate(data: NamesDataset) -> tuple[NamesDataset, int]:
    """``data`` with each (name, class) pair kept once (its first line), and how many lines went.

    The tutorial's files repeat names (Arabic: 2,000 lines, 108 distinct names); a repeated
    pair in both the training and the test rows scores memory, not generalization.
    """
    seen: set[tuple[str, int]] = set()
    keep: list[int] = []
    for row, pair in enumerate(zip(data.names, data.labels.tolist())):
        if pair not in seen:
            seen.add(pair)
            keep.append(row)
    rows = torch.tensor(keep, dtype=torch.long)
    return NamesDataset([data.names[i] for i in keep], data.labels[rows], data.classes, data.source), \
        len(data.names) - len(keep)


def grouped_split(names: Sequence[str], labels: torch.Tensor, valid_fraction: float, test_fraction: float,
                  generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Indices of train / valid / test rows such that no name string is in two of them.

    The rows of one name string form a group. Each group is stratified by the rarest class
    among its rows (a name both English and Vietnamese counts as Vietnamese, so small
    classes keep their share); per class, ``round(test_fraction * groups)`` groups go to test,
    then ``round(valid_fraction * rest)`` to valid. Indices come back sorted: the split is a
    pure function of the rows and the generator's seed.
    """
    counts = torch.bincount(labels).tolist()
    rows_of: dict[str, list[int]] = {}
    for row, name in enumerate(names):
        rows_of.setdefault(name, []).append(row)
    by_class: dict[int, list[str]] = {}
    for name, rows in rows_of.items():  # dict order is first appearance: deterministic
        rarest = min((int(labels[r]) for r in rows), key=lambda c: (counts[c], c))
        by_class.setdefault(rarest, []).append(name)
    parts: dict[str, list[int]] = {"train": [], "valid": [], "test": []}
    for cls in sorted(by_class):
        groups = by_class[cls]
        order = torch.randperm(len(groups), generator=generator).tolist()
        n_test = round(test_fraction * len(groups))
        n_valid = round(valid_fraction * (len(groups) - n_test))
        for position, g in enumerate(order):
            split = "test" if position < n_test else "valid" if position < n_test + n_valid else "train"
            parts[split].extend(rows_of[groups[g]])
    return {split: torch.tensor(sorted(rows), dtype=torch.long) for split, rows in parts.items()}


def random_split(n: int, valid_fraction: float, test_fraction: float,
                 generator: torch.Generator) -> dict[str, torch.Tensor]:
    """The PyTorch tutorial's split: ``test_fraction`` of all ``n`` rows at random (repeated names
    included, so a test name is often also a training name), then ``valid_fraction`` of the rest."""
    order = torch.randperm(n, generator=generator)
    n_test = round(test_fraction * n)
    n_valid = round(valid_fraction * (n - n_test))
    return {"test": order[:n_test].sort().values, "valid": order[n_test: n_test + n_valid].sort().values,
            "train": order[n_test + n_valid:].sort().values}


def overlap(names: Sequence[str], labels: torch.Tensor, rows: dict[str, torch.Tensor]) -> dict[str, float]:
    """Shares of the test rows whose (name, class) pair, or whose name string, is also a training row."""
    train_pairs = {(names[i], int(labels[i])) for i in rows["train"].tolist()}
    train_names = {name for name, _ in train_pairs}
    test = rows["test"].tolist()
    pairs = sum((names[i], int(labels[i])) in train_pairs for i in test)
    strings = sum(names[i] in train_names for i in test)
    return {"test_pairs_in_train": round(pairs / max(len(test), 1), 4),
            "test_names_in_train": round(strings / max(len(test), 1), 4)}


def ceiling(names: Sequence[str], labels: torch.Tensor) -> float:
    """The best accuracy any model can reach on these rows: a name with several classes can be
    right for only its most frequent one."""
    per_name: dict[str, dict[int, int]] = {}
    for name, label in zip(names, labels.tolist()):
        per_name.setdefault(name, {}).setdefault(label, 0)
        per_name[name][label] += 1
    return sum(max(c.values()) for c in per_name.values()) / max(len(names), 1)


BOUNDARY = 1  # generation's begin/end-of-name mark; letters are 2.. (0 is padding)


def generation_ids(categories: torch.Tensor, names: Sequence[str], alphabet: str = ALPHABET
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets of a name generator, teacher-forced.

    ``x [N, 2+L]``: the category, the begin mark, the name's letters (ids ``2..``), 0 after.
    ``y [M]``: for each real input position, row by row, the next letter or the end mark::

        x: cat  ^  R  o  s  s  0      (^ and $ are both BOUNDARY)
        y:         R  o  s  s  $
    """
    index = {c: i + 2 for i, c in enumerate(alphabet)}
    width = max((len(n) for n in names), default=0) + 1
    x = torch.zeros(len(names), 1 + width, dtype=torch.long)  # [N, 1+L+1]
    targets = []
    for row, name in enumerate(names):
        ids = [index[c] for c in name]
        x[row, 0] = categories[row]
        x[row, 1: 2 + len(ids)] = torch.tensor([BOUNDARY, *ids], dtype=torch.long)
        targets.extend([*ids, BOUNDARY])
    return x, torch.tensor(targets, dtype=torch.long)


class GenerationBatches:
    """Batches ``(x [B, 1+T], y [M])`` of (category, name) pairs for a name generator
    (``generation_ids``); ``shuffle`` draws a new order each pass from ``generator``."""

    def __init__(self, names: Sequence[str], categories: torch.Tensor, batch_size: int, *,
                 alphabet: str = ALPHABET, shuffle: bool = False, generator: torch.Generator | None = None,
                 device: torch.device | str = "cpu") -> None:
        self.names = list(names)
        self.categories = categories
        self.alphabet = alphabet
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = generator
        self.device = torch.device(device)

    @property
    def samples(self) -> int:
        return len(self.names)

    def __len__(self) -> int:
        return -(-len(self.names) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.names)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        for start in range(0, n, self.batch_size):
            rows = order[start: start + self.batch_size].tolist()
            x, y = generation_ids(self.categories[rows], [self.names[i] for i in rows], self.alphabet)
            yield x.to(self.device), y.to(self.device)
