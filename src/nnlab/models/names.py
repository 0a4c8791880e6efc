"""Surname classifiers beyond one network: a hashed character n-gram bag and an ensemble of small nets.

- ``name_ngrams``: ``NGramBag``, a fastText-style model: every character n-gram of orders
  ``1..orders`` of a name (with begin/end marks, so prefixes and suffixes are their own
  features), hashed into ``buckets`` embeddings, averaged, dropout, then linear. A linear model
  of its n-grams, in effect, trained like the nets.
- ``name_generator``: ``ConditionedNameGenerator``, ``name_gen`` (``nnlab.models.rnn``) with
  the language also, or only, as the recurrent net's initial state (``condition``: ``input``,
  ``state`` or ``both``).
- ``name_ensemble``: ``NameEnsemble``, several members (``cnn``: ``SequenceCNN``, ``rnn``: a
  bidirectional GRU ``SequenceRNN``, ``ngrams``: ``NGramBag``), each with its own head. Its
  ``forward`` is the mean of the members' log-probabilities (the normalized geometric mean of
  their probabilities), so evaluation, prediction and the loss treat it as one classifier.
  ``members_logits`` gives every member's logits ``[K, N, C]``; ``MemberLoss`` trains each
  member on its own cross-entropy (the mean of theirs), so with a per-parameter optimizer such
  as AdamW the members learn as if trained apart, in one pass over the batches.

Token ids are those of ``nnlab.data.names``: ``1..n_tokens-1`` letters, 0 padding.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from nnlab.models.registry import Classifier, Example, register, tokens
from nnlab.models.rnn import (Hidden, NameGenConfig, NameGenerator, SequenceCNN, SequenceRNN, SequenceRNNConfig,
                              _cell)

_PRIME = 1_000_003  # the rolling hash's base; ids stay far below 2**63 for names of any sane length


def ngram_ids(x: torch.Tensor, orders: int, buckets: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Hashed ids ``[N, G]`` of every 1..``orders``-gram of each padded name ``x [N, L]`` (begin
    and end marks around the name), and which of them are real (inside the marked name) ``[N, G]``.

    An n-gram's id depends only on its characters and its order, so a name's features do not
    depend on its batch's width.
    """
    n, width = x.shape
    lengths = (x != 0).sum(1)
    begin, end = -1, -2  # marks no letter id can equal
    marked = torch.zeros(n, width + 2, dtype=torch.long, device=x.device)  # [N, L+2]
    marked[:, 1: width + 1] = x
    marked[:, 0] = begin
    marked[torch.arange(n, device=x.device), lengths + 1] = end
    real = marked != 0
    ids, masks = [], []
    for order in range(1, min(orders, width + 2) + 1):
        span = width + 3 - order
        h = torch.full((n, span), order, dtype=torch.long, device=x.device)
        m = torch.ones(n, span, dtype=torch.bool, device=x.device)
        for j in range(order):
            h = (h * _PRIME + marked[:, j: j + span]) % (1 << 40)
            m &= real[:, j: j + span]
        ids.append(h)
        masks.append(m)
    return torch.cat(ids, 1) % buckets, torch.cat(masks, 1)


class NGramBag(Classifier):
    """Hashed character n-grams of orders ``1..orders`` -> mean of their embeddings -> dropout -> linear.

    The embeddings are stored divided by ``gain`` and multiplied back in ``forward``: under Adam,
    whose steps are about ``lr`` whatever the gradient's scale, they then move ``gain`` times
    faster than the rest, as sparse features need, while the model trains beside nets at one ``lr``.
    """

    def __init__(self, n_classes: int, orders: int = 5, buckets: int = 2 ** 14, dim: int = 64,
                 dropout: float = 0.3, gain: float = 4.0) -> None:
        super().__init__()
        if orders < 1 or buckets < 1 or gain <= 0:
            raise ValueError(f"orders and buckets must be at least 1 and gain positive, got {orders}, {buckets}, {gain}")
        self.orders, self.buckets, self.gain = orders, buckets, gain
        self.grams = nn.EmbeddingBag(buckets, dim, mode="sum")
        nn.init.normal_(self.grams.weight, std=1.0 / gain)  # N(0, 1) once multiplied by gain
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(dim, n_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The mean embedding of each name's n-grams, ``[N, dim]``, for padded ids ``x [N, L]``."""
        ids, mask = ngram_ids(x, self.orders, self.buckets)
        weights = mask.float() / mask.sum(1, keepdim=True).clamp(min=1)
        return self.gain * self.grams(ids, per_sample_weights=weights)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(features))

    def layer_groups(self) -> list[nn.Module]:
        return [self.grams, nn.Identity(), self.head]


MEMBER_KINDS = ("cnn", "rnn", "ngrams")


def name_member(kind: str, n_classes: int, n_tokens: int, embed: int, dropout: float, filters: int = 256,
                widths: Sequence[int] = (2, 3, 4, 5), hidden: int = 256, orders: int = 5,
                buckets: int = 2 ** 14) -> Classifier:
    """One ensemble member of ``kind`` (``cnn``, ``rnn`` or ``ngrams``) with the given sizes."""
    if kind == "cnn":
        return SequenceCNN(n_tokens, n_classes, embed, filters, tuple(widths), dropout)
    if kind == "rnn":
        return SequenceRNN(SequenceRNNConfig(n_tokens, n_classes, embed, hidden, 1, "gru", bidirectional=True,
                                             dropout=dropout, drop_embeddings=False))
    if kind == "ngrams":
        return NGramBag(n_classes, orders, buckets, embed, dropout)
    raise ValueError(f"member must be one of {', '.join(MEMBER_KINDS)}, got {kind!r}")


def mean_log_probability(logits: torch.Tensor) -> torch.Tensor:
    """The ensemble's scores ``[N, C]`` from its members' logits ``[K, N, C]``: their mean log-probability."""
    return logits.float().log_softmax(-1).mean(0)


class NameEnsemble(Classifier):
    """Members trained side by side, each on its own loss; predicts by the mean of their log-probabilities.

    ``forward_features`` is that mean ``[N, C]`` (already class scores: the head is the identity),
    so the ensemble is a classifier like any other; ``members_logits`` is what ``MemberLoss`` trains.
    """

    def __init__(self, members: Sequence[Classifier]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)
        self.head = nn.Identity()

    def members_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Every member's logits, ``[K, N, C]``."""
        return torch.stack([member(x) for member in self.members])

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return mean_log_probability(self.members_logits(x))

    def reset_classifier(self, n_classes: int) -> None:
        for member in self.members:
            member.reset_classifier(n_classes)

    def layer_groups(self) -> list[nn.Module]:
        return [nn.ModuleList([m.layer_groups()[0] for m in self.members]),
                nn.ModuleList([m.layer_groups()[1] for m in self.members]),
                nn.ModuleList([m.layer_groups()[2] for m in self.members])]


class MembersInTraining(nn.Module):
    """What the learner runs for a ``NameEnsemble``: every member's logits ``[K, N, C]`` while
    training (for ``MemberLoss``), the ensemble's scores ``[N, C]`` otherwise."""

    def __init__(self, ensemble: NameEnsemble) -> None:
        super().__init__()
        self.ensemble = ensemble

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ensemble.members_logits(x) if self.training else self.ensemble(x)


class MemberLoss(nn.Module):
    """Cross-entropy of each member's logits ``[K, N, C]``, averaged over the members (plain
    cross-entropy of ``[N, C]`` scores, such as the ensemble's in evaluation)."""

    def __init__(self, weight: torch.Tensor | None = None, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.loss = nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if output.dim() == 3:
            k, n, c = output.shape
            return self.loss(output.reshape(k * n, c), target.repeat(k))
        return self.loss(output, target)


def ensemble_correct(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Correct predictions of the ensemble in a batch: from member logits ``[K, N, C]`` (their mean
    log-probability) or from scores ``[N, C]``."""
    if output.dim() == 3:
        output = mean_log_probability(output)
    return (output.argmax(1) == target).sum()


@register("name_ngrams", example=Example(tokens()))
def name_ngrams(n_classes: int = 18, orders: int = 5, buckets: int = 2 ** 14, embed: int = 64,
                dropout: float = 0.3) -> NGramBag:
    """Hashed character n-gram bag (fastText-style) classifier of short sequences such as names."""
    return NGramBag(n_classes, orders, buckets, embed, dropout)


@register("name_ensemble", example=Example(tokens()))
def name_ensemble(n_classes: int = 18, n_tokens: int = 60, members: Sequence[str] = ("cnn", "cnn", "rnn"),
                  embed: int = 64, dropout: float = 0.5, filters: int = 256, widths: Sequence[int] = (2, 3, 4, 5),
                  hidden: int = 256, orders: int = 5, buckets: int = 2 ** 14) -> NameEnsemble:
    """Ensemble of ``members`` (``cnn``, ``rnn``, ``ngrams``; repeat one for several initializations)."""
    return NameEnsemble([name_member(kind, n_classes, n_tokens, embed, dropout, filters, widths, hidden, orders,
                                     buckets) for kind in members])


CONDITIONS = ("input", "state", "both")


class ConditionedNameGenerator(NameGenerator):
    """A ``NameGenerator`` whose language conditions the net at every step (``input``), through
    its initial state (``state``: ``tanh(W e)`` of the language embedding ``e``, for every layer,
    an LSTM's cell state too), or both (``both``).

    The input ``x [B, 1+T]`` is the parent's (the language in column 0); a call without a state
    starts from the language's initial state, so generation and teacher forcing agree.
    """

    def __init__(self, config: NameGenConfig, condition: str = "both") -> None:
        super().__init__(config)
        if condition not in CONDITIONS:
            raise ValueError(f"condition must be one of {', '.join(CONDITIONS)}, got {condition!r}")
        self.condition = condition
        self.initial = None
        if condition == "state":  # the letters alone are the input
            self.rnn = _cell(config.cell)(config.embed, config.hidden, config.layers, batch_first=True,
                                          dropout=config.dropout if config.layers > 1 else 0.0)
        if condition != "input":
            self.states = config.layers * (2 if config.cell == "lstm" else 1)
            self.initial = nn.Linear(config.category_embed, self.states * config.hidden)

    def initial_state(self, categories: torch.Tensor) -> Hidden:
        """The state ``[layers, B, H]`` (an LSTM's ``(h, c)``) the net starts from for ``categories [B]``."""
        n, layers, hidden = len(categories), self.config.layers, self.config.hidden
        state = torch.tanh(self.initial(self.category(categories)))                 # [B, S*H]
        state = state.view(n, self.states, hidden).transpose(0, 1).contiguous()     # [S, B, H]
        return (state[:layers], state[layers:]) if self.config.cell == "lstm" else state

    def read(self, x: torch.Tensor, hidden: Hidden | None = None) -> tuple[torch.Tensor, Hidden]:
        if hidden is None and self.initial is not None:
            hidden = self.initial_state(x[:, 0])
        if self.condition == "state":
            return self.rnn(self.embed(x[:, 1:]), hidden)
        return super().read(x, hidden)

    def layer_groups(self) -> list[nn.Module]:
        stem = [self.category, self.embed] + ([self.initial] if self.initial is not None else [])
        return [nn.ModuleList(stem), self.rnn, self.head]


@register("name_generator", example=Example(tokens(2)))  # a category and one character per row
def name_generator(n_classes: int = 59, condition: str = "both", **kwargs: object) -> ConditionedNameGenerator:
    """Language-conditioned character LSTM/GRU generating names, the language fed at every step,
    as the initial state, or both (``condition``); ``n_classes`` is the vocabulary."""
    return ConditionedNameGenerator(NameGenConfig(vocab_size=n_classes, **kwargs), condition)
