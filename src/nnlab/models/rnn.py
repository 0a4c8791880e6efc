"""Sequence models: a character-level language model, a forecaster and classifiers of padded sequences.

All take token ids (or values) and return logits, like every registered model, and offer
``forward_features``, ``forward_head``, ``reset_classifier`` and ``layer_groups``:

- ``char_rnn``: embedding -> LSTM/GRU -> linear over the vocabulary. ``forward(x [B, T])``
  gives logits ``[B*T, V]`` (one row per position, so ``CrossEntropyLoss`` and accuracy apply
  as to any classifier); ``forward_sequence`` also takes and returns the hidden state, and
  ``TruncatedBPTT`` carries that state from one window to the next, detached. With
  ``locked_dropout`` its dropout masks (between layers and before the output layer) are drawn
  once per sequence and held over every time step (``LockedDropout``).
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
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from nnlab.models.registry import Classifier, Example, images, register, tokens

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


class LockedDropout(nn.Module):
    """Dropout whose mask is drawn once per sequence and held over its time steps (AWD-LSTM's
    "locked" or variational dropout, fastai's ``RNNDropout``): inputs ``[B, T, H]``, a mask ``[B, 1, H]``.

    The same units are dropped at every position of a window, so the recurrent layers cannot
    route around them step to step, and the mask needs T times fewer random numbers: on the
    2-core CPU, drawing a full ``[64, 100, 512]`` dropout mask took 41 ms, this one 1.4 ms
    (docs/benchmarks.md, "Locked dropout"). Inputs of other ranks get an ordinary mask.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        shape = (x.shape[0], 1, x.shape[2]) if x.dim() == 3 else x.shape
        return x * x.new_empty(shape).bernoulli_(1.0 - self.p).div_(1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class LockedDropoutRNN(nn.Module):
    """A stack of one-layer LSTMs/GRUs with ``LockedDropout`` between layers, called as
    ``nn.LSTM(..., batch_first=True)`` is: ``(x [B, T, I], hidden) -> (out [B, T, H], hidden)``,
    the hidden state stacked over layers ``[L, B, H]`` (an ``(h, c)`` pair for an LSTM)."""

    def __init__(self, cell: type[nn.RNNBase], input_size: int, hidden: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(cell(input_size if i == 0 else hidden, hidden, 1, batch_first=True)
                                    for i in range(layers))
        self.drop = LockedDropout(dropout)

    def forward(self, x: torch.Tensor, hidden: Hidden | None = None) -> tuple[torch.Tensor, Hidden]:
        finals = []
        for i, layer in enumerate(self.layers):
            if i:
                x = self.drop(x)
            state = None if hidden is None else (tuple(h[i:i + 1] for h in hidden) if isinstance(hidden, tuple)
                                                 else hidden[i:i + 1])
            x, final = layer(x, state)
            finals.append(final)
        if isinstance(finals[0], tuple):
            return x, tuple(torch.cat(parts) for parts in zip(*finals))
        return x, torch.cat(finals)


@dataclass
class CharRNNConfig:
    """Sizes of a character-level language model; ``tie_weights`` needs ``embed == hidden``;
    ``locked_dropout``: one dropout mask per sequence (``LockedDropout``), not one per position."""

    vocab_size: int = 65
    embed: int = 64
    hidden: int = 256
    layers: int = 2
    cell: str = "lstm"
    dropout: float = 0.2
    tie_weights: bool = False
    locked_dropout: bool = False


class CharRNN(Classifier):
    """Embedding -> stacked LSTM/GRU -> dropout -> linear over the vocabulary."""

    def __init__(self, config: CharRNNConfig) -> None:
        super().__init__()
        if config.tie_weights and config.embed != config.hidden:
            raise ValueError(f"tie_weights needs embed == hidden, got {config.embed} and {config.hidden}")
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.embed)
        self.rnn: nn.Module
        if config.locked_dropout:
            self.rnn = LockedDropoutRNN(_cell(config.cell), config.embed, config.hidden, config.layers, config.dropout)
            self.drop: nn.Module = LockedDropout(config.dropout)
        else:
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


@register("char_rnn", example=Example(tokens(1)))  # one position per row
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
    pooling: str = "last"   # last | max | attention: how the states of a sequence become one vector


POOLINGS = ("last", "max", "attention")


class AttentionPooling(nn.Module):
    """Additive attention over a sequence's states: ``a = softmax(v . tanh(W h_t))`` over its real
    tokens (padding gets weight 0), pooled as ``sum_t a_t h_t`` (Bahdanau's score with a learnt
    query, as in hierarchical attention networks)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.project = nn.Linear(size, size)
        self.v = nn.Linear(size, 1, bias=False)

    def weights(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Weights ``[N, L]`` of states ``[N, L, F]``; ``mask [N, L]`` is True at real tokens."""
        scores = self.v(torch.tanh(self.project(states))).squeeze(-1)          # [N, L]
        return scores.masked_fill(~mask, float("-inf")).softmax(-1)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return (self.weights(states, mask).unsqueeze(-1) * states).sum(1)      # [N, F]


class SequenceRNN(Classifier):
    """Embedding -> LSTM/GRU (bidirectional or not) over packed sequences -> pooling -> linear.

    ``pooling`` turns the states into one vector: ``last``, the final state of each direction;
    ``max``, the largest value of each feature over the real tokens; ``attention``, an
    ``AttentionPooling`` of the states, whose weights (``attention_weights``) say which tokens
    the prediction rests on. Padding is packed away and masked, so a sequence's output does not
    depend on how long its batch's longest sequence is. ``name_rnn`` and ``text_rnn`` are two sizes of it.
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
        if config.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {config.pooling!r}")
        self.attend = AttentionPooling(self.directions * config.hidden) if config.pooling == "attention" else None
        self.head = nn.Linear(self.directions * config.hidden, config.n_classes)

    def _states(self, x: torch.Tensor, unpack: bool = True) -> tuple[torch.Tensor | None, Hidden, torch.Tensor]:
        """Top-layer states ``[N, L, D*H]`` (zero at padding; ``None`` unless ``unpack``), the final
        hidden state, and the mask of real tokens ``[N, L]``."""
        embedded = self.embed(x)
        if self.config.drop_embeddings:
            embedded = self.drop(embedded)
        lengths = (x != 0).sum(1).clamp(min=1).cpu()  # pack needs lengths on the CPU
        packed = pack_padded_sequence(embedded, lengths, batch_first=True, enforce_sorted=False)
        outputs, hidden = self.rnn(packed)
        states = pad_packed_sequence(outputs, batch_first=True, total_length=x.shape[1])[0] if unpack else None
        mask = torch.arange(x.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)   # [N, L]
        return states, hidden, mask.to(x.device)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled states ``[N, D*H]`` of padded ids ``x [N, L]`` (see ``pooling``)."""
        last = self.config.pooling == "last"
        states, hidden, mask = self._states(x, unpack=not last)  # the final states need no unpacking
        if last:
            h = hidden[0] if isinstance(hidden, tuple) else hidden  # [layers*D, N, H]
            return torch.cat(list(h[-self.directions:]), dim=1)    # forward (, backward): [N, D*H]
        if self.config.pooling == "max":
            return states.masked_fill(~mask.unsqueeze(-1), float("-inf")).max(1).values
        return self.attend(states, mask)

    def attention_weights(self, x: torch.Tensor) -> torch.Tensor:
        """Each token's attention weight ``[N, L]`` for padded ids ``x [N, L]`` (0 at padding, each
        row sums to 1 over its real tokens); only with ``pooling="attention"``."""
        if self.attend is None:
            raise ValueError(f"attention_weights needs pooling='attention'; this model pools by "
                             f"{self.config.pooling!r}")
        states, _, mask = self._states(x)
        return self.attend.weights(states, mask)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(features))

    def layer_groups(self) -> list[nn.Module]:
        body = self.rnn if self.attend is None else nn.ModuleList([self.rnn, self.attend])
        return [self.embed, body, self.head]


@register("name_rnn", example=Example(tokens()))
def name_rnn(n_classes: int = 18, n_tokens: int = 60, embed: int = 32, hidden: int = 128, layers: int = 1,
             cell: str = "gru", dropout: float = 0.1, pooling: str = "last") -> SequenceRNN:
    """Bidirectional GRU (or ``cell="lstm"``) classifier of short character sequences such as names."""
    return SequenceRNN(SequenceRNNConfig(n_tokens, n_classes, embed, hidden, layers, cell, bidirectional=True,
                                         dropout=dropout, drop_embeddings=False, pooling=pooling))


@register("text_rnn", example=Example(tokens()))
def text_rnn(n_classes: int = 2, n_tokens: int = 20000, embed: int = 100, hidden: int = 128, layers: int = 1,
             cell: str = "lstm", bidirectional: bool = True, dropout: float = 0.3,
             pooling: str = "last") -> SequenceRNN:
    """Word-level LSTM (or ``cell="gru"``, ``bidirectional=False``) classifier of padded, packed token ids;
    ``pooling`` is ``last``, ``max`` or ``attention`` (see ``SequenceRNN``)."""
    return SequenceRNN(SequenceRNNConfig(n_tokens, n_classes, embed, hidden, layers, cell, bidirectional,
                                         dropout, drop_embeddings=True, pooling=pooling))


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


@register("series_rnn", example=Example(lambda n: torch.randn(n, 5)))  # windows of 5 values
def series_rnn(n_classes: int = 1, **kwargs: object) -> SeriesRNN:
    """LSTM (or ``cell="gru"``) forecaster: a window of past values in, the next ``n_classes`` values out."""
    return SeriesRNN(SeriesRNNConfig(n_classes=n_classes, **kwargs))


class SequenceCNN(Classifier):
    """Embedding -> 1-D convolutions of several widths side by side -> ReLU -> each filter's max
    over the sequence's real positions -> dropout -> linear (a character CNN in the manner of
    Kim's sentence CNN). Positions past a sequence's end are left out of the max, so its output
    does not depend on its batch; no recurrence, so it trains faster than the GRU on a CPU.

    The widths' convolutions (``convs``, ``nn.Conv1d`` each, padded by ``width // 2``) run as one
    matrix product: every position's window of the widest reach, times the kernels side by side,
    each zero where its window is narrower (built from ``convs`` each step, so the zeros get no
    gradient). Then the max over positions (with ``-inf`` past the end), and the ReLU after it
    (the same, as ReLU is monotone). Four convolutions, their ReLUs and maxes were 1.7x the time
    of a bf16 training step on the 2-core CPU (docs/benchmarks.md, "names-cnn: one matrix product").
    """

    def __init__(self, n_tokens: int, n_classes: int, embed: int, filters: int, widths: tuple[int, ...],
                 dropout: float) -> None:
        super().__init__()
        self.embed = nn.Embedding(n_tokens, embed, padding_idx=0)
        self.convs = nn.ModuleList([nn.Conv1d(embed, filters, width, padding=width // 2) for width in widths])
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(len(widths) * filters, n_classes)
        # output position t of width w sees inputs t - w // 2 ... t - w // 2 + w - 1
        self.reach = (max(w // 2 for w in widths), max(w - 1 - w // 2 for w in widths))  # left, right of t

    def window_weight(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All widths' kernels as one ``[len(widths) * filters, span * embed]`` matrix over a
        position's window of ``span`` characters (zero outside each width's), and their biases."""
        left, right = self.reach
        span = left + right + 1
        blocks = []
        for conv in self.convs:
            width = conv.kernel_size[0]
            kernel = conv.weight.transpose(1, 2)  # [F, w, E]
            start = left - width // 2
            blocks.append(nn.functional.pad(kernel, (0, 0, start, span - start - width)).flatten(1))
        return torch.cat(blocks), torch.cat([conv.bias for conv in self.convs])

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Each filter's largest response within each sequence, ``[N, len(widths) * filters]``, for ids ``x [N, L]``."""
        n, length = x.shape
        left, right = self.reach
        embedded = nn.functional.pad(self.embed(x), (0, 0, left, right))  # [N, L + span - 1, E]
        windows = embedded.unfold(1, left + right + 1, 1).transpose(2, 3).reshape(n * length, -1)  # [N*L, span*E]
        weight, bias = self.window_weight()
        maps = torch.addmm(bias, windows, weight.t()).view(n, length, -1)  # [N, L, widths*F]
        real = torch.arange(length, device=x.device)[None, :] < (x != 0).sum(1, keepdim=True)  # [N, L]
        maps = maps.masked_fill(~real[:, :, None], float("-inf"))
        # the pool of the transposed view: 4x faster than maps.max(1) (and its backward) here
        return torch.relu(nn.functional.adaptive_max_pool1d(maps.transpose(1, 2), 1).squeeze(2))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(features))

    def layer_groups(self) -> list[nn.Module]:
        return [self.embed, self.convs, self.head]


@register("name_cnn", example=Example(tokens()))
def name_cnn(n_classes: int = 18, n_tokens: int = 60, embed: int = 64, filters: int = 256,
             widths: tuple[int, ...] = (2, 3, 4, 5), dropout: float = 0.5) -> SequenceCNN:
    """Character CNN classifier of short sequences such as names: ``filters`` per kernel width."""
    return SequenceCNN(n_tokens, n_classes, embed, filters, tuple(widths), dropout)


@dataclass
class RowRNNConfig:
    """Sizes of an image classifier that reads an image row by row: ``row_size`` values a step
    (channels times width: 28 for Fashion-MNIST), ``hidden`` units, from the last step's state."""

    n_classes: int = 10
    row_size: int = 28
    hidden: int = 128
    layers: int = 1
    cell: str = "lstm"
    bidirectional: bool = False
    dropout: float = 0.0


class RowRNN(Classifier):
    """An LSTM/GRU that reads an image ``[N, C, H, W]`` as ``H`` steps of ``C*W`` pixels (the
    "pure RNN for image classification" question) -> linear on the top layer's final state
    (both directions' when bidirectional). The image kind trains it like any classifier."""

    def __init__(self, config: RowRNNConfig) -> None:
        super().__init__()
        self.config = config
        self.directions = 2 if config.bidirectional else 1
        self.rnn = _cell(config.cell)(config.row_size, config.hidden, config.layers, batch_first=True,
                                      bidirectional=config.bidirectional,
                                      dropout=config.dropout if config.layers > 1 else 0.0)
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(self.directions * config.hidden, config.n_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The final state of the top layer (each direction), ``[N, D*H]``, after reading every row."""
        n, c, h, w = x.shape
        if c * w != self.config.row_size:
            raise ValueError(f"row_rnn reads rows of {self.config.row_size} values; got images of {c}x{h}x{w}")
        rows = x.permute(0, 2, 1, 3).reshape(n, h, c * w).contiguous()  # [N, C, H, W] -> [N, H, C*W]
        _, hidden = self.rnn(rows)
        last = hidden[0] if isinstance(hidden, tuple) else hidden  # [layers*D, N, H]
        return torch.cat(list(last[-self.directions:]), dim=1)      # [N, D*H]

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(features))

    def layer_groups(self) -> list[nn.Module]:
        return [self.rnn, self.head]


@register("row_rnn", example=Example(images()))
def row_rnn(n_classes: int = 10, **kwargs: object) -> RowRNN:
    """LSTM (or ``cell="gru"``) image classifier reading one row of pixels a step (28 steps of 28 for Fashion-MNIST)."""
    return RowRNN(RowRNNConfig(n_classes=n_classes, **kwargs))


@dataclass
class NameGenConfig:
    """Sizes of a character language model of names conditioned on a category (a language):
    ``vocab_size`` tokens (0 padding, 1 the begin/end-of-name mark, then the letters)."""

    vocab_size: int = 59
    n_categories: int = 18
    embed: int = 32
    category_embed: int = 32
    hidden: int = 256
    layers: int = 1
    cell: str = "lstm"
    dropout: float = 0.2


class NameGenerator(Classifier):
    """Category embedding fed at every step beside the character embedding -> LSTM/GRU -> linear
    over the characters (the PyTorch "generating names" tutorial's conditioning, as a batched model).

    Its input ``x [B, 1+T]`` holds the category in column 0 and the characters read so far
    (begin mark, letters, 0 after the end) in the rest. ``forward`` returns logits only at the
    real positions, ``[M, V]`` with ``M`` the number of non-padding inputs, in row order, so that
    ``CrossEntropyLoss`` against the targets at those positions (``[M]``) needs no masking.
    """

    def __init__(self, config: NameGenConfig) -> None:
        super().__init__()
        self.config = config
        self.category = nn.Embedding(config.n_categories, config.category_embed)
        self.embed = nn.Embedding(config.vocab_size, config.embed, padding_idx=0)
        self.rnn = _cell(config.cell)(config.embed + config.category_embed, config.hidden, config.layers,
                                      batch_first=True, dropout=config.dropout if config.layers > 1 else 0.0)
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden, config.vocab_size)

    def read(self, x: torch.Tensor, hidden: Hidden | None = None) -> tuple[torch.Tensor, Hidden]:
        """The top layer's output ``[B, T, H]`` at every input position of ``x [B, 1+T]``, and the new state."""
        chars = self.embed(x[:, 1:])                                       # [B, T, E]
        category = self.category(x[:, 0])[:, None, :].expand(-1, chars.shape[1], -1)  # [B, T, C]
        return self.rnn(torch.cat([chars, category], 2), hidden)

    def forward_sequence(self, x: torch.Tensor, hidden: Hidden | None = None) -> tuple[torch.Tensor, Hidden]:
        """Logits ``[B, T, V]`` at every input position of ``x [B, 1+T]`` from ``hidden``, and the new state."""
        out, hidden = self.read(x, hidden)
        return self.head(self.drop(out)), hidden

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The top layer's output at each real (non-padding) position, ``[M, H]``."""
        out, _ = self.read(x)
        return out[x[:, 1:] != 0]                                          # [B, T, H] -> [M, H]

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(features))

    def layer_groups(self) -> list[nn.Module]:
        return [nn.ModuleList([self.category, self.embed]), self.rnn, self.head]


@register("name_gen", example=Example(tokens(2)))  # a category and one character per row
def name_gen(n_classes: int = 59, **kwargs: object) -> NameGenerator:
    """Category-conditioned character LSTM (or ``cell="gru"``) generating names; ``n_classes`` is the vocabulary."""
    return NameGenerator(NameGenConfig(vocab_size=n_classes, **kwargs))
