"""Sentence pairs for translation: a tab-separated pairs file, the generated date task, vocabularies, batches.

``read_pairs`` reads a file like the PyTorch seq2seq tutorial's ``eng-fra.txt`` (Tatoeba: English,
French, attribution; columns after the two chosen are ignored), normalises each side as the
tutorial does (lowercase, Unicode to ASCII, ``.!?`` split off, anything else not a letter becomes a
space) and keeps the pairs that pass the optional length and English-prefix filters.
``date_pairs`` generates the date task: one date written in many human formats ("3rd of March
1999", "03/03/99", "Wednesday, March 3, 1999") paired with its ISO 8601 form, a task with real
structure where exact match is the metric. ``PairBatches`` yields padded, length-sorted batches
that the seq2seq model packs. ``ENG_FRA`` is the tutorial's ``data.zip`` for ``nnlab download eng-fra``.
"""
from __future__ import annotations

import datetime
import os
import random
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import torch

from nnlab.data.sources import TUTORIAL_DATA_URL, cache_root, download, place_files, zip_members
from nnlab.errors import DataError

PAD, SOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ("<pad>", "<sos>", "<eos>", "<unk>")

# The tutorial's filter: English sentences of the form "I am ...", "he is ..." (after normalisation,
# where "I'm" became "i m ").
TUTORIAL_PREFIXES = ("i am ", "i m ", "he is", "he s ", "she is", "she s ", "you are", "you re ",
                     "we are", "we re ", "they are", "they re ")


def unicode_to_ascii(text: str) -> str:
    """``text`` with accents dropped (NFD, combining marks removed): "é" -> "e", as the tutorial does."""
    return "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")


def normalize(text: str) -> str:
    """The tutorial's normalisation: lowercase, ASCII, ``.!?`` split off as words, other non-letters as spaces."""
    text = unicode_to_ascii(text.lower().strip())
    text = re.sub(r"([.!?])", r" \1", text)
    text = re.sub(r"[^a-zA-Z.!?]+", r" ", text)
    return " ".join(text.split())


def tokenize(text: str, tokens: str) -> list[str]:
    """``text`` as words (split on spaces) or as characters (``tokens="chars"``)."""
    return list(text) if tokens == "chars" else text.split()


def detokenize(tokens: Sequence[str], unit: str) -> str:
    """The inverse of ``tokenize``: characters joined as they are, words with spaces."""
    return "".join(tokens) if unit == "chars" else " ".join(tokens)


@dataclass(frozen=True)
class PairFilter:
    """Which pairs to keep: both sides shorter than ``max_length`` tokens (the tutorial's
    ``MAX_LENGTH`` test; ``None``: any length) and, where ``prefixes`` is given, an English side
    (the file's first column) starting with one of them."""

    max_length: int | None = None
    prefixes: tuple[str, ...] = ()

    def keep(self, english: str, source: list[str], target: list[str]) -> bool:
        if self.max_length is not None and (len(source) >= self.max_length or len(target) >= self.max_length):
            return False
        return not self.prefixes or english.startswith(self.prefixes)


def parse_prefixes(spec: str) -> tuple[str, ...]:
    """``tutorial`` -> the tutorial's English prefixes; ``"i am ,he is"`` -> those; ``""`` -> none."""
    if spec == "tutorial":
        return TUTORIAL_PREFIXES
    return tuple(p.lower() for p in spec.split(",") if p.strip())


def read_pairs(path: str | Path, source_column: int = 0, target_column: int = 1, normalise: bool = True,
               tokens: str = "words", keep: PairFilter = PairFilter()) -> list[tuple[str, str]]:
    """The (source, target) sentence pairs of the tab-separated file ``path``, normalised and filtered.

    Each line holds at least the two chosen columns; further columns (Tatoeba's attribution) are
    ignored and blank lines skipped. A line without a tab, without the chosen column, with an
    empty side, or not UTF-8 is a ``DataError`` naming the file and line; so is a file of which no
    pair passes ``keep``.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise DataError(f"{path}: cannot read the pairs file ({error.strerror or error})") from None
    wanted = max(source_column, target_column)
    pairs: list[tuple[str, str]] = []
    for number, line_bytes in enumerate(raw.splitlines(), start=1):
        try:
            line = line_bytes.decode("utf-8")
        except UnicodeDecodeError as error:
            raise DataError(f"{path}: line {number}: not UTF-8 (byte {error.start}); save the file as UTF-8") from None
        if not line.strip():
            continue
        columns = line.split("\t")
        if len(columns) == 1:
            raise DataError(f"{path}: line {number}: no tab; expected SOURCE<TAB>TARGET[<TAB>...]")
        if len(columns) <= wanted:
            raise DataError(f"{path}: line {number}: {len(columns)} columns, no column {wanted} "
                            "(source_column and target_column count from 0)")
        source, target = columns[source_column], columns[target_column]
        if normalise:
            source, target = normalize(source), normalize(target)
        for side, text in (("source", source), ("target", target)):
            if not text.strip():
                raise DataError(f"{path}: line {number}: empty {side} side (column "
                                f"{source_column if side == 'source' else target_column})")
        english = normalize(columns[0]) if normalise else columns[0].lower()
        if keep.keep(english, tokenize(source, tokens), tokenize(target, tokens)):
            pairs.append((source, target))
    if not pairs:
        raise DataError(f"{path}: no sentence pairs" + (" pass the length and prefix filters"
                                                        if keep != PairFilter() else ""))
    return pairs


MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def ordinal(n: int) -> str:
    """1 -> "1st", 2 -> "2nd", 11 -> "11th", 23 -> "23rd"."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _formats(d: datetime.date) -> list[str]:
    """``d`` written the ways people write dates. Slashes are always month first (US) and dots day
    first (European), so no string names two dates; two-digit years cover 1950-2049."""
    month, day, yy = MONTHS[d.month - 1], DAYS[d.weekday()], f"{d.year % 100:02d}"
    return [
        f"{ordinal(d.day)} of {month} {d.year}", f"the {ordinal(d.day)} of {month}, {d.year}",
        f"{month} {d.day}, {d.year}", f"{day}, {month} {d.day}, {d.year}", f"{day[:3]} {d.day} {month[:3]} {d.year}",
        f"{d.month:02d}/{d.day:02d}/{yy}", f"{d.month}/{d.day}/{d.year}", f"{d.day:02d}.{d.month:02d}.{d.year}",
        f"{d.day} {month} {d.year}", f"{d.day} {month[:3]} {yy}", f"{month[:3]} {d.day} {d.year}",
        f"{d.day}-{month[:3]}-{yy}", f"{month.upper()} {d.day} {d.year}",
        f"{day.lower()} {ordinal(d.day)} {month.lower()} {d.year}",
        f"{d.year}/{d.month:02d}/{d.day:02d}",
    ]


def date_pairs(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """``n`` distinct (human-written date, ISO 8601 date) pairs, dates from 1950 to 2049, a
    pure function of ``seed``: ("3rd of March 1999", "1999-03-03"), ("03/03/99", "1999-03-03")...

    Distinct sources, so a held-out pair never appears in training word for word.
    """
    rng = random.Random(seed)
    first, days = datetime.date(1950, 1, 1).toordinal(), 100 * 365 + 24
    seen: set[str] = set()
    pairs: list[tuple[str, str]] = []
    while len(pairs) < n:
        d = datetime.date.fromordinal(first + rng.randrange(days))
        text = rng.choice(_formats(d))
        if text not in seen:
            seen.add(text)
            pairs.append((text, d.isoformat()))
    return pairs


class Vocab:
    """Tokens <-> ids, ``<pad>``=0, ``<sos>``=1, ``<eos>``=2, ``<unk>``=3 first."""

    def __init__(self, tokens: Sequence[str]) -> None:
        self.tokens = list(tokens)
        self.index = {token: i for i, token in enumerate(self.tokens)}

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, tokens: Sequence[str]) -> list[int]:
        return [self.index.get(t, UNK) for t in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Tokens of ``ids`` up to the first ``<eos>``, without the special tokens."""
        out = []
        for i in ids:
            if i == EOS:
                break
            if i >= len(SPECIALS):
                out.append(self.tokens[i])
        return out


def build_vocab(sentences: Iterable[list[str]], min_freq: int = 1, max_size: int | None = None) -> Vocab:
    """The vocabulary of ``sentences`` (lists of tokens): tokens seen at least ``min_freq`` times,
    the most frequent first (ties alphabetical, so it is a pure function of the data), at most ``max_size``."""
    counts = Counter(token for sentence in sentences for token in sentence)
    ranked = sorted((t for t, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t))
    if max_size is not None:
        ranked = ranked[: max(0, max_size - len(SPECIALS))]
    return Vocab([*SPECIALS, *ranked])


@dataclass
class PairBatch:
    """One batch as the seq2seq model takes it: source ids ``[B, S]`` padded with 0 and their lengths
    ``[B]``, and the decoder's teacher-forced input ``[B, T]`` (``<sos>`` then the target, shifted)."""

    source: torch.Tensor
    lengths: torch.Tensor
    target_in: torch.Tensor

    def __len__(self) -> int:
        return len(self.source)


def encode_pairs(pairs: Sequence[tuple[list[str], list[str]]], source_vocab: Vocab,
                 target_vocab: Vocab) -> tuple[list[list[int]], list[list[int]]]:
    """Token ids of each pair's source, and of its target followed by ``<eos>``."""
    sources = [source_vocab.encode(s) for s, _ in pairs]
    targets = [target_vocab.encode(t) + [EOS] for _, t in pairs]
    return sources, targets


def pad(rows: Sequence[Sequence[int]], width: int | None = None) -> torch.Tensor:
    """``rows`` of ids as one ``[N, width]`` tensor padded with 0 (``width``: the longest row)."""
    width = width or max(len(r) for r in rows)
    out = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out


class PairBatches:
    """Batches ``(PairBatch, target_out [B, T])`` of encoded pairs, padded per batch.

    The ids are padded once into ``[N, Smax]`` / ``[N, Tmax]``; each batch takes its rows and
    trims the columns to its longest sentence. Training batches come in the order of one
    permutation per epoch drawn from ``generator``. ``target_out`` is the target with ``<eos>``
    and ``target_in`` the same shifted right behind ``<sos>``::

        target_in : <sos>  le   chat  dort  <pad>
        target_out:  le    chat dort  <eos> <pad>
    """

    def __init__(self, sources: list[list[int]], targets: list[list[int]], batch_size: int, *,
                 shuffle: bool = False, generator: torch.Generator | None = None,
                 device: torch.device | str = "cpu") -> None:
        self.source = pad(sources)                                  # [N, Smax]
        self.lengths = torch.tensor([len(s) for s in sources])      # [N]
        self.target = pad(targets)                                  # [N, Tmax]
        self.target_lengths = torch.tensor([len(t) for t in targets])
        self.batch_size, self.shuffle, self.device = batch_size, shuffle, torch.device(device)
        self.generator = generator if generator is not None else torch.Generator()

    @property
    def samples(self) -> int:
        return len(self.source)

    def __len__(self) -> int:
        return (len(self.source) + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[tuple[PairBatch, torch.Tensor]]:
        n = len(self.source)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        for start in range(0, n, self.batch_size):
            rows = order[start: start + self.batch_size]
            lengths = self.lengths[rows]
            width, t_width = int(lengths.max()), int(self.target_lengths[rows].max())
            target = self.target[rows, :t_width]                                    # [B, T]
            target_in = torch.cat([torch.full((len(rows), 1), SOS), target[:, :-1]], 1)
            target_in = target_in.masked_fill(target_in == EOS, PAD)  # <eos> is never an input
            batch = PairBatch(self.source[rows, :width].to(self.device), lengths, target_in.to(self.device))
            yield batch, target.to(self.device)


# The PyTorch seq2seq tutorial's data.zip; upstream publishes no checksum, so the download is
# checked by its structure (a zip holding data/eng-fra.txt of tab-separated pairs) and size instead.
ENG_FRA_URL = TUTORIAL_DATA_URL
ENG_FRA_MEMBER = "data/eng-fra.txt"
ENG_FRA_MIN_PAIRS = 100_000  # the tutorial's file has 135,842 pairs
ENG_FRA_MIN_BYTES = 5_000_000


def fetch_eng_fra(dest_dir: str | Path | None = None, url: str = ENG_FRA_URL, progress: bool = True,
                  min_pairs: int = ENG_FRA_MIN_PAIRS, min_bytes: int = ENG_FRA_MIN_BYTES) -> dict[str, object]:
    """Download the tutorial's ``data.zip`` into ``dest_dir`` (default: the cache's ``eng-fra/``),
    resumable and atomic (``nnlab.data.sources.download``), and extract ``eng-fra.txt`` beside it.

    No checksum is published upstream, so the archive is checked by its structure (a zip with
    ``data/eng-fra.txt``) and the text by its size and pair count; a failed check removes the
    download. An ``eng-fra.txt`` already there that passes the check is kept without a download.
    """
    directory = Path(dest_dir).expanduser() if dest_dir is not None else cache_root() / "eng-fra"
    text_path = directory / "eng-fra.txt"
    check = "structure and size (no checksum is published)"

    def checked(path: Path) -> int:
        """The pairs in ``path`` (``read_pairs`` refuses a line without a tab or a non-UTF-8 file);
        a file too small to be the tutorial's is removed."""
        size = path.stat().st_size
        n = len(read_pairs(path, normalise=False))
        if size < min_bytes or n < min_pairs:
            path.unlink()
            raise DataError(f"{url}: eng-fra.txt has {size} bytes and {n} pairs, expected at least "
                            f"{min_bytes} bytes and {min_pairs} pairs; removed")
        return n

    if text_path.is_file():
        try:
            return {"path": str(text_path), "pairs": checked(text_path), "downloaded": False, "check": check}
        except DataError:
            pass  # a bad or partial copy: fetch it again
    archive = download(url, directory / "data.zip", md5=None, progress=progress)
    text = zip_members(archive, url, ENG_FRA_MEMBER, "the tutorial's data.zip")["eng-fra.txt"]
    part = place_files(directory, {"eng-fra.txt.part": text})[0]
    try:
        pairs = checked(part)
    except DataError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, text_path)  # only a checked copy is ever named eng-fra.txt
    return {"path": str(text_path), "pairs": pairs, "downloaded": True, "bytes": archive.stat().st_size,
            "check": check}

def shared_data() -> Path:
    """``../shared/data`` beside the checkout (this project's offline data)."""
    return Path(__file__).resolve().parents[4] / "shared" / "data"


def pairs_places(name: str) -> list[tuple[Path, str]]:
    """Where the named pairs set ``name`` (``eng-fra``, ``eng-fra-5k``) is looked for, in order, each with
    a label: ``$NNLAB_DATA/translation/``, the cache's ``eng-fra/`` (``nnlab download eng-fra``), then
    ``../shared/data/translation/``; the places of ``kinds.translate.locate_pairs``."""
    file = f"{name}.txt"
    root = os.environ.get("NNLAB_DATA")
    places = [(Path(root).expanduser() / "translation" / file, "$NNLAB_DATA/translation")] if root else []
    return places + [(cache_root() / "eng-fra" / file, "cache"), (shared_data() / "translation" / file, "shared data")]
