"""Text for language models: read a UTF-8 corpus, map characters (or words) to ids, and batch it for truncated BPTT.

The default corpus is Tiny Shakespeare (karpathy/char-rnn's ``input.txt``), found like every
dataset (``$NNLAB_DATA/text/``, the cache, or downloaded with its md5 checked); ``--data``
takes any UTF-8 text file instead. A character vocabulary (``Vocab``) is the sorted set of the
corpus's characters and travels with the checkpoint as a plain string. A word vocabulary
(``WordVocab``) holds ``<unk>`` and the most frequent tokens of the training text (words with
their case and inner apostrophes, single punctuation marks, line breaks: ``split_words``), up
to a cap, and travels as a plain list of strings.
"""
from __future__ import annotations

import copy
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch

from nnlab.data.sources import DatasetSpec, RemoteFile, locate
from nnlab.errors import ConfigError, DataError

# karpathy/char-rnn's input.txt (1,115,394 bytes), kept as tinyshakespeare.txt; its md5 is that of
# the copy in this project's shared data, whose sha256 (86c4e6aa...65ed) its README gives for upstream's file.
SHAKESPEARE = DatasetSpec(
    name="text",
    files=(RemoteFile("tinyshakespeare.txt", md5="6fb458f1232090904fb40fe944165e91", remote="input.txt"),),
    mirrors=("https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/",),
)


def read_text(path: str | Path) -> str:
    """The whole file as text; an empty, binary or non-UTF-8 file is a ``DataError`` naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such text file")
    raw = path.read_bytes()
    if b"\x00" in raw[:1 << 20]:
        raise DataError(f"{path}: looks binary (holds NUL bytes); expected a UTF-8 text file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text (bad byte at offset {error.start}); "
                        "expected a UTF-8 text file") from None
    if not text.strip():
        raise DataError(f"{path}: empty text file; expected some UTF-8 text to learn from")
    return text


def load_corpus(data: str | Path | None = None) -> tuple[str, str]:
    """The training text and where it came from: ``data`` (a file) or Tiny Shakespeare, located or fetched."""
    if data is not None:
        return read_text(data), str(data)
    directory, source = locate(SHAKESPEARE)
    return read_text(directory / SHAKESPEARE.files[0].name), source


@dataclass(frozen=True)
class Vocab:
    """Characters <-> ids; ``chars`` is the sorted alphabet, saved in checkpoints as a plain string."""

    chars: str

    @classmethod
    def from_text(cls, text: str) -> "Vocab":
        return cls("".join(sorted(set(text))))

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str, what: str = "text") -> torch.Tensor:
        """int64 ids of ``text``; characters outside the vocabulary are a ``DataError`` listing them."""
        index = {c: i for i, c in enumerate(self.chars)}
        unknown = sorted({c for c in text if c not in index})
        if unknown:
            shown = ", ".join(repr(c) for c in unknown[:10])
            raise DataError(f"{what}: {len(unknown)} character(s) not in the model's vocabulary of "
                            f"{len(self.chars)}: {shown}")
        return torch.tensor([index[c] for c in text], dtype=torch.long)

    def decode(self, ids: torch.Tensor | list[int]) -> str:
        return "".join(self.chars[i] for i in (ids.tolist() if isinstance(ids, torch.Tensor) else ids))

    def token(self, i: int) -> str:
        return self.chars[i]

    @property
    def saved(self) -> str:
        """What the checkpoint holds of it (``vocab``): the alphabet as one string."""
        return self.chars


UNK = "<unk>"
# A word (letters, digits, inner apostrophes: "o'er", "don't", with its case), a line break,
# or any other single character that is not a space (punctuation).
WORD = re.compile(r"\n|\w+(?:'\w+)*|[^\w\s]")
# Written without a space before them (closing marks) or after them (opening marks); "'" and
# "-" join both sides ("'tis", "well-known"), line breaks take no space either side.
NO_SPACE_BEFORE = frozenset(",.;:!?)]}'-\n")
NO_SPACE_AFTER = frozenset("([{'-\n")


def split_words(text: str) -> list[str]:
    r"""The word-level tokens of ``text``: ``"ROMEO:\nO, she's fair."`` -> ROMEO, :, \n, O, ",", she's, fair, ."""
    return WORD.findall(text)


def join_words(tokens: Sequence[str], after: str | None = None) -> str:
    """Tokens back to text, spaced as prose (see ``NO_SPACE_BEFORE``/``NO_SPACE_AFTER``); ``after`` is
    the token the text continues (no leading space when ``None``)."""
    out = []
    previous = after
    for token in tokens:
        if previous is not None and token not in NO_SPACE_BEFORE and previous not in NO_SPACE_AFTER:
            out.append(" ")
        out.append(token)
        previous = token
    return "".join(out)


@dataclass(frozen=True)
class WordVocab:
    """Word tokens <-> ids: ``words[0]`` is ``<unk>`` (any token outside the vocabulary), then the
    training text's tokens by falling frequency (ties alphabetical); saved as a plain list."""

    words: tuple[str, ...]

    @classmethod
    def from_tokens(cls, tokens: Sequence[str], max_vocab: int) -> "WordVocab":
        """``<unk>`` and the ``max_vocab - 1`` most frequent of ``tokens``."""
        if max_vocab < 2:
            raise ConfigError(f"max_vocab must be at least 2 (<unk> and one word), got {max_vocab}")
        counts = Counter(tokens)
        ranked = sorted((t for t in counts if t != UNK), key=lambda t: (-counts[t], t))
        return cls((UNK, *ranked[: max_vocab - 1]))

    def __len__(self) -> int:
        return len(self.words)

    @property
    def index(self) -> dict[str, int]:
        return {word: i for i, word in enumerate(self.words)}

    def ids(self, tokens: Sequence[str]) -> torch.Tensor:
        """int64 ids of ``tokens``; tokens outside the vocabulary are ``<unk>`` (0)."""
        index = self.index
        return torch.tensor([index.get(t, 0) for t in tokens], dtype=torch.long)

    def unknown(self, tokens: Sequence[str]) -> list[str]:
        """The distinct tokens of ``tokens`` outside the vocabulary, in order of appearance."""
        index = self.index
        return list(dict.fromkeys(t for t in tokens if t not in index))

    def decode(self, ids: torch.Tensor | list[int], after: str | None = None) -> str:
        return join_words([self.words[i] for i in (ids.tolist() if isinstance(ids, torch.Tensor) else ids)], after)

    def token(self, i: int) -> str:
        return self.words[i]

    @property
    def saved(self) -> list[str]:
        """What the checkpoint holds of it (``vocab``): the words, ``<unk>`` first."""
        return list(self.words)


def split_stream(ids: torch.Tensor, valid_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``1 - valid_fraction`` of the text for training, the rest (contiguous) for validation."""
    cut = int(len(ids) * (1.0 - valid_fraction))
    return ids[:cut], ids[cut:]


def split_three(items: Sequence, valid_fraction: float, test_fraction: float) -> tuple[Sequence, Sequence, Sequence]:
    """Training text, then validation, then test, contiguous: the last ``test_fraction`` is the test
    part and the ``valid_fraction`` before it the validation part."""
    test_cut = int(len(items) * (1.0 - test_fraction))
    valid_cut = int(len(items) * (1.0 - test_fraction - valid_fraction))
    return items[:valid_cut], items[valid_cut:test_cut], items[test_cut:]


class StreamBatches:
    """Windows of B parallel streams for truncated BPTT (pytorch/examples ``batchify``/``get_batch``).

    The text is cut into B contiguous streams, one per batch row; window k holds characters
    ``[k*T, (k+1)*T)`` of every stream and its targets are the same characters shifted by one.
    With the text ``a b c ... x`` (24 characters), B = 4, T = 2::

        stream 0: a b | c d | e f        window 0            window 1
        stream 1: g h | i j | k l        x = a b  y = b c    x = c d  y = d e
        stream 2: m n | o p | q r            g h      h i        i j      j k
        stream 3: s t | u v | w x            m n      n o        o p      p q
                                             s t      t u        u v      v w

    Row b of window k+1 continues row b of window k, so the model's final hidden state of
    one window is the right initial state of the next (carried, then detached). Each
    training epoch starts the streams at a random offset in ``[0, T)``, so windows do not
    always begin at the same characters; a stream's last characters that do not fill a
    window with its targets are left out. Yields ``(x [B, T], y [B*T])``: targets flattened,
    to line up with the model's ``[B*T, V]`` logits.

    ``shard`` gives one rank of a distributed run its rows: with 2 processes above, rank 0 reads
    streams 0 and 2, rank 1 streams 1 and 3 (``[B / 2, T]`` windows). The layout is the one of B
    streams, so window k of all ranks together is window k of one process, and each rank's rows
    continue its own rows of the window before: the carried state stays the rank's own.
    """

    def __init__(self, ids: torch.Tensor, batch_size: int, bptt: int, *, shuffle_offset: bool = False,
                 generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> None:
        if batch_size < 1 or bptt < 1:
            raise ConfigError(f"batch_size and bptt must be at least 1, got {batch_size} and {bptt}")
        if len(ids) < batch_size * (bptt + 1) + bptt:  # room for any offset in [0, T)
            raise DataError(f"text too short: {len(ids)} characters cannot fill {batch_size} streams of "
                            f"{bptt + 1}; use a smaller --batch-size or --set bptt=N")
        self.ids = ids
        self.batch_size = batch_size
        self.bptt = bptt
        self.shuffle_offset = shuffle_offset
        self.generator = generator
        self.device = torch.device(device)
        self.rank, self.world_size = 0, 1

    def shard(self, rank: int, world_size: int) -> "StreamBatches":
        """These windows for rank ``rank`` of ``world_size`` processes: streams ``rank``,
        ``rank + world_size``, ... of the B (a batch size that does not divide is a ``ConfigError``)."""
        if self.batch_size % world_size:
            raise ConfigError(f"--batch-size {self.batch_size} (parallel streams) must divide evenly over "
                              f"{world_size} processes")
        share = copy.copy(self)
        share.rank, share.world_size = rank, world_size
        return share

    def __len__(self) -> int:
        # The worst case offset (T - 1) still leaves this many full windows.
        stream_len = (len(self.ids) - self.bptt) // self.batch_size
        return max(1, (stream_len - 1) // self.bptt)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        offset = 0
        if self.shuffle_offset:
            offset = int(torch.randint(self.bptt, (1,), generator=self.generator))
        stream_len = (len(self.ids) - offset) // self.batch_size
        streams = self.ids[offset: offset + stream_len * self.batch_size]
        streams = streams.view(self.batch_size, stream_len)                  # [B, L]
        streams = streams[self.rank::self.world_size].to(self.device)         # [R, L]: this rank's rows (R = B / world_size)
        for k in range(len(self)):
            start = k * self.bptt
            x = streams[:, start: start + self.bptt]                  # [R, T]
            y = streams[:, start + 1: start + 1 + self.bptt]          # [R, T], shifted by one
            yield x, y.reshape(-1)                                    # [R*T]

