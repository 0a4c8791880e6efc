"""Labelled texts from a CSV (a text column and a label column): word tokens, a vocabulary, padded ids.

Text is lowercased and split by one regular expression into words (letters, digits and inner
apostrophes: ``don't``) and single punctuation marks (``!`` carries sentiment). The
vocabulary is built from the training rows only: the ``max_vocab - 2`` most frequent tokens
seen at least ``min_freq`` times, after ``<pad>`` (id 0) and ``<unk>`` (id 1). It is saved with
the checkpoint as a plain list of strings, so a run never depends on this module's
tokenizer staying the same beyond the regular expression below.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import torch

from nnlab.data.names import NameBatches
from nnlab.data.tabular import read_csv
from nnlab.errors import DataError

PAD, UNK = "<pad>", "<unk>"
TOKEN = re.compile(r"\w+(?:'\w+)*|[^\w\s]")


def tokenize(text: str) -> list[str]:
    """Lowercased words and punctuation marks of ``text`` ("Don't!  Great." -> don't, !, great, .)."""
    return TOKEN.findall(text.lower())


@dataclass
class Vocab:
    """Tokens by id: ``tokens[0]`` is ``<pad>``, ``tokens[1]`` is ``<unk>``, then by falling frequency."""

    tokens: list[str]

    def __post_init__(self) -> None:
        self.index = {token: i for i, token in enumerate(self.tokens)}

    def __len__(self) -> int:
        return len(self.tokens)

    def ids(self, tokens: Iterable[str]) -> list[int]:
        """The id of each token; unknown tokens are ``<unk>`` (1)."""
        return [self.index.get(token, 1) for token in tokens]


def build_vocab(documents: Iterable[Sequence[str]], max_vocab: int, min_freq: int = 1) -> Vocab:
    """The ``max_vocab`` entries (``<pad>`` and ``<unk>`` included) of the most frequent tokens.

    Ties are broken alphabetically, so the vocabulary is a pure function of the documents.
    """
    if max_vocab < 3:
        raise ValueError(f"max_vocab must be at least 3 (<pad>, <unk> and one word), got {max_vocab}")
    counts = Counter(token for doc in documents for token in doc)
    ranked = sorted((t for t, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t))
    return Vocab([PAD, UNK, *ranked[: max_vocab - 2]])


def encode_texts(documents: Sequence[Sequence[str]], vocab: Vocab, max_length: int) -> torch.Tensor:
    """Padded ids ``[N, L]`` (``L`` the longest document, at most ``max_length``; 0 after each one's end).

    A document longer than ``max_length`` tokens keeps its first ``max_length``.
    """
    width = max(1, min(max_length, max((len(d) for d in documents), default=1)))
    ids = torch.zeros(len(documents), width, dtype=torch.long)  # [N, L]
    for row, doc in enumerate(documents):
        kept = vocab.ids(doc[:width])
        ids[row, : len(kept)] = torch.tensor(kept, dtype=torch.long)
    return ids


@dataclass
class TextDataset:
    """Every row's tokens, its class index, the class names (sorted) and the file they came from."""

    documents: list[list[str]]
    labels: torch.Tensor     # int64 [N]
    classes: list[str]
    source: str


def load_text_csv(path: str | Path, text_column: str, label_column: str) -> TextDataset:
    """Read ``path``'s ``text_column`` (tokenized) and ``label_column`` (class names, sorted).

    An unreadable or empty CSV, a missing column, a row without text or label, or fewer than
    two classes is a ``DataError`` naming the file (and the line where there is one).
    """
    table = read_csv(path)
    texts = table.column(text_column)
    labels = table.column(label_column)
    documents = []
    for text, label, line in zip(texts, labels, table.lines):
        tokens = tokenize(text)
        if not tokens:
            raise DataError(f"{table.source}: line {line}: no text in column {text_column!r}")
        if not label:
            raise DataError(f"{table.source}: line {line}: no label in column {label_column!r}")
        documents.append(tokens)
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise DataError(f"{table.source}: label column {label_column!r} has only one class ({classes[0]!r}); "
                        f"classification needs at least two")
    index = {name: i for i, name in enumerate(classes)}
    return TextDataset(documents, torch.tensor([index[v] for v in labels], dtype=torch.long), classes,
                       table.source)


class TokenBatches(NameBatches):
    """Padded batches ``(ids [B, L], labels [B])`` of already encoded ``ids [N, Lmax]``, trimmed per batch.

    The names batcher's order (fixed, shuffled, or class-balanced draws) over token ids
    instead of characters.
    """

    def __init__(self, ids: torch.Tensor, labels: torch.Tensor, batch_size: int, *, shuffle: bool = False,
                 sample_weights: torch.Tensor | None = None, generator: torch.Generator | None = None,
                 device: torch.device | str = "cpu") -> None:
        super().__init__([], labels, batch_size, shuffle=shuffle, sample_weights=sample_weights,
                         generator=generator, device=device)
        self.ids = ids                       # [N, Lmax]
        self.lengths = (ids != 0).sum(1)     # [N]
