"""Sequence models: a character-level language model, a forecaster and classifiers of padded sequences.

All take token ids (or values) and return logits, like every registered model, and offer
``forward_features``, ``forward_head``, ``reset_classifier`` and ``layer_groups``:

- ``char_rnn``: embedding -> LSTM/GRU -> linear over the vocabulary. ``forward(x [B, T])``
  gives logits ``[B*T, V]`` (one row per position, so ``CrossEntropyLoss`` and accuracy apply
  as to any classifier); ``forward_sequence`` also takes and returns the hidden state, and
  ``TruncatedBPTT`` carries that state from one window to the next, detached.
- ``name_rnn`` and ``text_rnn``: two sizes of ``SequenceRNN``, embedding -> LSTM/GRU over
  padded, packed sequences (id 0 is padding) -> linear over the classes, from the final states.
  ``name_rnn`` is a bidirectional GRU over characters; ``text_rnn`` an LSTM over words,
  bidirectional or not, with dropout on the word embeddings too.
- ``name_cnn``: the same job as ``name_rnn`` with a character CNN (``SequenceCNN``): parallel
  convolutions of several widths, max over each name; faster on a CPU and as accurate.
- ``series_rnn``: LSTM/GRU over a window of values -> linear to the next values (forecasting;
  its "classes" are the forecast horizon).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from nnlab.models.registry import Classifier, register

Hidden = torch.Tensor | tuple[torch.Tensor, torch.Tensor]
CELLS = {"lstm": nn.LSTM, "gru": nn.GRU}


def detach_hidden(hidden: Hidden | None) -> Hidden | None:
    """The hidden state cut from the graph that made it (an LSTM's ``(h, c)`` pair as well).

    Truncated BPTT: the next window starts from these values but backpropagates no further.
    """
    if hidden is None:
        return None
    if isinstance(hidden, tuple):
        return tuple(h.detach() for h in hidden)
    return hidden.detach()


def _cell(name: str) -> type[nn.RNNBase]:
    if name not in CELLS:
        raise ValueError(f"cell must be one of {', '.join(CELLS)}, got {name!r}")
    return CELLS[name]


@dataclass
class CharRNNConfig:
    """Sizes of a character-level language model; ``tie_weights`` needs ``embed == hidden``."""

    vocab_size: int = 65
    embed: int = 64
    hidden: int = 256
    layers: int = 2
    cell: str = "lstm"
    dropout: float = 0.2
    tie_weights: bool = False


class CharRNN(Classifier):
    """Embedding -> stacked LSTM/GRU -> dropout -> linear over the vocabulary."""

    def __init__(self, config: CharRNNConfig) -> None:
        super().__init__()
        if config.tie_weights and config.embed != config.hidden:
            raise ValueError(f"tie_weights needs embed == hidden, got {config.embed} and {config.hidden}")
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.embed)
        self.rnn = _cell(config.cell)(config.embed, config.hidden, config.layers, batch_first=True,
                                      dropout=config.dropout if config.layers > 1 else 0.0)
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden, config.vocab_size)
        if config.tie_weights:
            self.head.weight = self.embed.weight

    def forward_sequence(self, x: torch.Tensor, hidden: Hidden | None = None) -> tuple[torch.Tensor, Hidden]:
        """Logits ``[B, T, V]`` for ids ``x [B, T]`` starting from ``hidden``, and the final hidden state."""
        out, hidden = self.rnn(self.embed(x), hidden)  # out: [B, T, H]
        return self.head(self.drop(out)), hidden

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The top layer's output at every position, ``[B*T, H]`` (from a zero state)."""
        out, _ = self.rnn(self.embed(x))
        return out.reshape(-1, out.shape[-1])  # [B, T, H] -> [B*T, H]

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(features))

    def layer_groups(self) -> list[nn.Module]:
        if self.head.weight is self.embed.weight:  # tied: the head's own parameter is only its bias
            return [self.embed, self.rnn, _BiasOnly(self.head)]
        return [self.embed, self.rnn, self.head]


class _BiasOnly(nn.Module):
    """A view of a tied linear layer that owns only its bias (for ``layer_groups``)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.bias = linear.bias


class TruncatedBPTT(nn.Module):
    """Runs a ``CharRNN`` window after window, carrying its hidden state and detaching it.

    ``forward(x)`` continues from the state the previous window ended in, and keeps the new
    final state with ``detach_hidden``: gradients stay within the window, the graph of earlier
    windows is freed, and memory is flat however long training runs. ``reset()`` starts over
    from zeros (at each pass over the text, and before validation). A batch of another size
    also starts from zeros.
    """

    def __init__(self, model: CharRNN) -> None:
        super().__init__()
        self.model = model
        self.hidden: Hidden | None = None

    def reset(self) -> None:
        self.hidden = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.hidden
        if hidden is not None and (hidden[0] if isinstance(hidden, tuple) else hidden).shape[1] != x.shape[0]:
            hidden = None
        logits, hidden = self.model.forward_sequence(x, hidden)
        self.hidden = detach_hidden(hidden)
        return logits.reshape(-1, logits.shape[-1])  # [B, T, V] -> [B*T, V]


@register("char_rnn")
def char_rnn(n_classes: int = 65, **kwargs: object) -> CharRNN:
    """Character-level LSTM/GRU language model over a vocabulary of ``n_classes`` characters."""
    return CharRNN(CharRNNConfig(vocab_size=n_classes, **kwargs))


@dataclass
class SequenceRNNConfig:
    """Sizes of a classifier of padded sequences of ``n_tokens`` ids (0 is padding).

    ``drop_embeddings`` applies the dropout to the embeddings as well as to the final states
    (word embeddings of a large vocabulary overfit first; a small alphabet's do not).
    """

    n_tokens: int
    n_classes: int
    embed: int
    hidden: int
    layers: int
    cell: str
    bidirectional: bool
    dropout: float
    drop_embeddings: bool


class SequenceRNN(Classifier):
    """Embedding -> LSTM/GRU (bidirectional or not) over packed sequences -> linear on the final states.

    Padding is packed away, so a sequence's output does not depend on how long its batch's
    longest sequence is. ``name_rnn`` and ``text_rnn`` are two sizes of it.
    """

    def __init__(self, config: SequenceRNNConfig) -> None:
        super().__init__()
        self.config = config
        self.directions = 2 if config.bidirectional else 1
        self.embed = nn.Embedding(config.n_tokens, config.embed, padding_idx=0)
        self.rnn = _cell(config.cell)(config.embed, config.hidden, config.layers, batch_first=True,
                                      bidirectional=config.bidirectional,
                                      dropout=config.dropout if config.layers > 1 else 0.0)
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(self.directions * config.hidden, config.n_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The top layer's final state of each direction, ``[N, D*H]``, for padded ids ``x [N, L]``."""
        embedded = self.embed(x)
        if self.config.drop_embeddings:
            embedded = self.drop(embedded)
        lengths = (x != 0).sum(1).clamp(min=1).cpu()  # pack needs lengths on the CPU
        packed = pack_padded_sequence(embedded, lengths, batch_first=True, enforce_sorted=False)
        _, hidden = self.rnn(packed)
        h = hidden[0] if isinstance(hidden, tuple) else hidden  # [layers*D, N, H]
        return torch.cat(list(h[-self.directions:]), dim=1)    # forward (, backward): [N, D*H]

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(features))

    def layer_groups(self) -> list[nn.Module]:
        return [self.embed, self.rnn, self.head]


@register("name_rnn")
def name_rnn(n_classes: int = 18, n_tokens: int = 60, embed: int = 32, hidden: int = 128, layers: int = 1,
             cell: str = "gru", dropout: float = 0.1) -> SequenceRNN:
    """Bidirectional GRU (or ``cell="lstm"``) classifier of short character sequences such as names."""
    return SequenceRNN(SequenceRNNConfig(n_tokens, n_classes, embed, hidden, layers, cell, bidirectional=True,
                                         dropout=dropout, drop_embeddings=False))


@register("text_rnn")
def text_rnn(n_classes: int = 2, n_tokens: int = 20000, embed: int = 100, hidden: int = 128, layers: int = 1,
             cell: str = "lstm", bidirectional: bool = True, dropout: float = 0.3) -> SequenceRNN:
    """Word-level LSTM (or ``cell="gru"``, ``bidirectional=False``) classifier of padded, packed token ids."""
    return SequenceRNN(SequenceRNNConfig(n_tokens, n_classes, embed, hidden, layers, cell, bidirectional,
                                         dropout, drop_embeddings=True))


@dataclass
class SeriesRNNConfig:
    """Sizes of a forecaster of the next ``n_classes`` values of a univariate series."""

    n_classes: int = 1
    hidden: int = 32
    layers: int = 1
    cell: str = "lstm"
    dropout: float = 0.0


class SeriesRNN(Classifier):
    """LSTM/GRU over a window of values ``[N, W]`` -> linear from the last state to the next values."""

    def __init__(self, config: SeriesRNNConfig) -> None:
        super().__init__()
        self.config = config
        self.rnn = _cell(config.cell)(1, config.hidden, config.layers, batch_first=True,
                                      dropout=config.dropout if config.layers > 1 else 0.0)
        self.head = nn.Linear(config.hidden, config.n_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The top layer's state after the window's last value, ``[N, H]``."""
        out, _ = self.rnn(x.float().unsqueeze(-1))  # [N, W] -> [N, W, 1] -> out [N, W, H]
        return out[:, -1]

    def layer_groups(self) -> list[nn.Module]:
        return [self.rnn, self.head]


@register("series_rnn")
def series_rnn(n_classes: int = 1, **kwargs: object) -> SeriesRNN:
    """LSTM (or ``cell="gru"``) forecaster: a window of past values in, the next ``n_classes`` values out."""
    return SeriesRNN(SeriesRNNConfig(n_classes=n_classes, **kwargs))


class SequenceCNN(Classifier):
    """Embedding -> 1-D convolutions of several widths side by side -> ReLU -> each filter's max
    over the sequence's real positions -> dropout -> linear (a character CNN in the manner of
    Kim's sentence CNN). Positions past a sequence's end are left out of the max, so its output
    does not depend on its batch; no recurrence, so it trains faster than the GRU on a CPU.
    """

    def __init__(self, n_tokens: int, n_classes: int, embed: int, filters: int, widths: tuple[int, ...],
                 dropout: float) -> None:
        super().__init__()
        self.embed = nn.Embedding(n_tokens, embed, padding_idx=0)
        self.convs = nn.ModuleList([nn.Conv1d(embed, filters, width, padding=width // 2) for width in widths])
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(len(widths) * filters, n_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Each filter's largest response within each sequence, ``[N, len(widths) * filters]``, for ids ``x [N, L]``."""
        length = x.shape[1]
        real = (torch.arange(length, device=x.device)[None, :] < (x != 0).sum(1, keepdim=True))[:, None, :]
        embedded = self.embed(x).transpose(1, 2)  # [N, E, L]
        # an even width pads one extra position on the right: keep the first L outputs
        maps = [torch.relu(conv(embedded))[:, :, :length] for conv in self.convs]  # each [N, F, L]
        return torch.cat([m.masked_fill(~real, 0.0).amax(2) for m in maps], dim=1)  # ReLU >= 0: padding never wins

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(features))

    def layer_groups(self) -> list[nn.Module]:
        return [self.embed, self.convs, self.head]


@register("name_cnn")
def name_cnn(n_classes: int = 18, n_tokens: int = 60, embed: int = 64, filters: int = 256,
             widths: tuple[int, ...] = (2, 3, 4, 5), dropout: float = 0.5) -> SequenceCNN:
    """Character CNN classifier of short sequences such as names: ``filters`` per kernel width."""
    return SequenceCNN(n_tokens, n_classes, embed, filters, tuple(widths), dropout)
