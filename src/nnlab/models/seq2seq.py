"""Sequence to sequence with attention: a GRU encoder, a GRU decoder that attends over it, greedy and beam decoding.

``seq2seq`` (registered) is Bahdanau et al.'s model (2015) at the size of the PyTorch tutorial:

- the encoder embeds the padded source ids ``[B, S]`` (0 is padding), runs a (bidirectional) GRU
  over the packed sequences and gives the memory ``[B, S, M]`` (``M = 2H`` when bidirectional)
  and, through a ``tanh`` bridge, the decoder's first hidden state ``[L, B, H]``;
- ``attention="bahdanau"`` (additive, ``v . tanh(W q + U m)``): each step's query is the decoder's
  previous state; the context goes into the GRU with the embedded previous word and into the
  output layer; ``attention="luong"`` (dot product against projected memory, ``q . W m``): the
  query is the new state and ``tanh(W_c [s; c])`` feeds the output layer. Padded source positions
  are masked out of the softmax, so attention weights sum to 1 over real tokens;
- ``forward(batch)`` takes a ``PairBatch`` (source, lengths, the teacher-forced decoder input)
  and returns the logits ``[B, T, V]`` of every target position. With ``teacher_forcing < 1``,
  in training, each example feeds back its own prediction at a step with probability
  ``1 - teacher_forcing``. Luong attention with full teacher forcing runs the decoder GRU over
  the whole target at once (no Python loop over steps); every other case steps through time,
  batched over the examples.

``greedy`` and ``beam_search`` decode a batch of sources (beam search keeps ``beam`` hypotheses
per sentence as one batch of ``B * beam`` rows) and return the attention weights of the chosen
output, for the attention-matrix plot.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from nnlab.models.registry import Example, register

PAD, SOS, EOS = 0, 1, 2
ATTENTIONS = ("bahdanau", "luong")


@dataclass
class Seq2SeqConfig:
    """Sizes of the encoder-decoder; ``n_source``/``n_target`` are the vocabularies (specials included)."""

    n_source: int = 32
    n_target: int = 32
    embed: int = 64
    hidden: int = 128
    layers: int = 1
    attention: str = "bahdanau"
    bidirectional: bool = True
    dropout: float = 0.1
    teacher_forcing: float = 1.0


class Encoder(nn.Module):
    """Embedding -> GRU over packed sources -> memory ``[B, S, M]`` and the decoder's first state."""

    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__()
        self.embedding = nn.Embedding(config.n_source, config.embed, padding_idx=PAD)
        self.dropout = nn.Dropout(config.dropout)
        self.rnn = nn.GRU(config.embed, config.hidden, config.layers, batch_first=True,
                          bidirectional=config.bidirectional, dropout=config.dropout if config.layers > 1 else 0.0)
        directions = 2 if config.bidirectional else 1
        self.layers, self.directions = config.layers, directions
        self.bridge = nn.Linear(directions * config.hidden, config.hidden)

    def forward(self, source: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedded = self.dropout(self.embedding(source))                      # [B, S, E]
        packed = pack_padded_sequence(embedded, lengths.cpu(), batch_first=True, enforce_sorted=False)
        outputs, final = self.rnn(packed)                                    # final [L*D, B, H]
        memory, _ = pad_packed_sequence(outputs, batch_first=True, total_length=source.shape[1])  # [B, S, D*H]
        final = final.view(self.layers, self.directions, *final.shape[1:])  # [L, D, B, H]
        final = torch.cat(final.unbind(1), dim=-1)                          # [L, B, D*H]: both directions
        return memory, torch.tanh(self.bridge(final))                       # [L, B, H]


class Attention(nn.Module):
    """Scores of a query against each memory position, softmax over the real (unmasked) positions.

    ``bahdanau``: ``v . tanh(W q + U m)``; ``luong``: ``q . (W m)`` (Luong's "general" score, the
    dot product after projecting the memory to the query's size). ``keys`` (``U m`` or ``W m``)
    is computed once per batch, not once per step.
    """

    def __init__(self, kind: str, query: int, memory: int, hidden: int) -> None:
        super().__init__()
        if kind not in ATTENTIONS:
            raise ValueError(f"attention must be one of {', '.join(ATTENTIONS)}, got {kind!r}")
        self.kind = kind
        if kind == "bahdanau":
            self.key = nn.Linear(memory, hidden, bias=False)
            self.query = nn.Linear(query, hidden)
            self.v = nn.Linear(hidden, 1, bias=False)
        else:
            self.key = nn.Linear(memory, query, bias=False)

    def keys(self, memory: torch.Tensor) -> torch.Tensor:
        return self.key(memory)                                              # [B, S, A]

    def forward(self, query: torch.Tensor, keys: torch.Tensor, memory: torch.Tensor,
                mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Context ``[B, T, M]`` and weights ``[B, T, S]`` of queries ``[B, T, Q]``; ``mask [B, S]`` is
        True at real source tokens."""
        if self.kind == "bahdanau":
            energy = torch.tanh(keys.unsqueeze(1) + self.query(query).unsqueeze(2))  # [B, T, S, A]
            scores = self.v(energy).squeeze(-1)                                       # [B, T, S]
        else:
            scores = query @ keys.transpose(1, 2)                                     # [B, T, S]
        scores = scores.masked_fill(~mask.unsqueeze(1), float("-inf"))
        weights = scores.softmax(-1)
        return weights @ memory, weights


class Decoder(nn.Module):
    """A GRU over the previous target words that attends over the encoder's memory at every step."""

    def __init__(self, config: Seq2SeqConfig, memory: int) -> None:
        super().__init__()
        self.kind = config.attention
        self.embedding = nn.Embedding(config.n_target, config.embed, padding_idx=PAD)
        self.dropout = nn.Dropout(config.dropout)
        self.attention = Attention(config.attention, config.hidden, memory, config.hidden)
        rnn_in = config.embed + memory if self.kind == "bahdanau" else config.embed
        self.rnn = nn.GRU(rnn_in, config.hidden, config.layers, batch_first=True,
                          dropout=config.dropout if config.layers > 1 else 0.0)
        if self.kind == "bahdanau":  # output from state, context and previous word (Bahdanau's deep output, one layer)
            self.combine = nn.Linear(config.hidden + memory + config.embed, config.hidden)
        else:                        # Luong's attentional state tanh(W_c [s; c])
            self.combine = nn.Linear(config.hidden + memory, config.hidden)
        self.head = nn.Linear(config.hidden, config.n_target)

    def step(self, tokens: torch.Tensor, hidden: torch.Tensor, memory: torch.Tensor, keys: torch.Tensor,
             mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One step for previous tokens ``[B, T]`` (``T`` is 1 except on the parallel Luong path):
        logits ``[B, T, V]``, the new hidden state ``[L, B, H]`` and attention weights ``[B, T, S]``."""
        embedded = self.dropout(self.embedding(tokens))                                   # [B, T, E]
        if self.kind == "bahdanau":
            context, weights = self.attention(hidden[-1].unsqueeze(1), keys, memory, mask)  # [B, 1, M]
            output, hidden = self.rnn(torch.cat([embedded, context], -1), hidden)         # [B, 1, H]
            features = torch.cat([output, context, embedded], -1)
        else:
            output, hidden = self.rnn(embedded, hidden)                                   # [B, T, H]
            context, weights = self.attention(output, keys, memory, mask)                 # [B, T, M]
            features = torch.cat([output, context], -1)
        return self.head(self.dropout(torch.tanh(self.combine(features)))), hidden, weights


class Seq2Seq(nn.Module):
    """Encoder, attention decoder, and the decoding searches; see the module docstring."""

    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__()
        if not 0.0 <= config.teacher_forcing <= 1.0:
            raise ValueError(f"teacher_forcing must be in [0, 1], got {config.teacher_forcing}")
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config, self.encoder.directions * config.hidden)

    def layer_groups(self) -> list[nn.Module]:
        """Embeddings, the recurrent body (encoder, attention, decoder GRU), and the output layer."""
        d = self.decoder
        return [nn.ModuleList([self.encoder.embedding, d.embedding]),
                nn.ModuleList([self.encoder.rnn, self.encoder.bridge, d.attention, d.rnn, d.combine]), d.head]

    def encode(self, source: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Memory ``[B, S, M]``, its attention keys, the mask of real tokens ``[B, S]`` and the first state."""
        memory, hidden = self.encoder(source, lengths)
        return memory, self.decoder.attention.keys(memory), source != PAD, hidden

    def forward(self, batch) -> torch.Tensor:  # batch: nnlab.data.translation.PairBatch (kept free of data/)
        """Logits ``[B, T, V]`` of every target position, the decoder fed ``batch.target_in``
        (teacher forcing), or its own predictions at a rate of ``1 - teacher_forcing`` in training."""
        memory, keys, mask, hidden = self.encode(batch.source, batch.lengths)
        target_in = batch.target_in                                                       # [B, T]
        ratio = self.config.teacher_forcing if self.training else 1.0
        if ratio == 1.0 and self.decoder.kind == "luong":
            return self.decoder.step(target_in, hidden, memory, keys, mask)[0]           # all steps at once
        # Each example's coin for each step: use the true previous word, or its own last prediction.
        forced = torch.rand(target_in.shape, device=target_in.device) < ratio if ratio < 1.0 else None
        logits, tokens = [], target_in[:, :1]
        for t in range(target_in.shape[1]):
            if t and forced is not None:
                tokens = torch.where(forced[:, t:t + 1], target_in[:, t:t + 1], logits[-1].argmax(-1))
            elif t:
                tokens = target_in[:, t:t + 1]
            step_logits, hidden, _ = self.decoder.step(tokens, hidden, memory, keys, mask)
            logits.append(step_logits)                                                    # [B, 1, V]
        return torch.cat(logits, 1)

    @torch.no_grad()
    def greedy(self, source: torch.Tensor, lengths: torch.Tensor,
               max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The most likely next word at every step, for the whole batch at once: ids ``[B, T]``
        (``<eos>`` ends a sentence, ``<pad>`` after it) and attention weights ``[B, T, S]``."""
        memory, keys, mask, hidden = self.encode(source, lengths)
        tokens = torch.full((len(source), 1), SOS, dtype=torch.long, device=source.device)
        done = torch.zeros(len(source), dtype=torch.bool, device=source.device)
        out, attention = [], []
        for _ in range(max_length):
            logits, hidden, weights = self.decoder.step(tokens, hidden, memory, keys, mask)
            tokens = logits.argmax(-1).masked_fill(done.unsqueeze(1), PAD)                # [B, 1]
            out.append(tokens)
            attention.append(weights)
            done |= tokens.squeeze(1) == EOS
            if bool(done.all()):  # host sync once per step: stop when every sentence has ended
                break
        return torch.cat(out, 1), torch.cat(attention, 1)

    @torch.no_grad()
    def beam_search(self, source: torch.Tensor, lengths: torch.Tensor, max_length: int, beam: int = 5,
                    length_penalty: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Beam search, every sentence's ``beam`` hypotheses as one batch of ``B * beam`` rows: ids
        ``[B, T]`` and attention ``[B, T, S]`` of each sentence's best finished hypothesis, ranked by
        total log-probability over ``length ** length_penalty`` (0: no normalisation)."""
        B, k = len(source), beam
        memory, keys, mask, hidden = self.encode(source, lengths)
        memory, keys, mask = (x.repeat_interleave(k, 0) for x in (memory, keys, mask))  # [B*k, ...]
        hidden = hidden.repeat_interleave(k, 1)                                           # [L, B*k, H]
        device = source.device
        scores = torch.full((B, k), float("-inf"), device=device)
        scores[:, 0] = 0.0  # one live hypothesis at the start, so the first step expands it alone
        tokens = torch.full((B * k, 1), SOS, dtype=torch.long, device=device)
        history = torch.zeros(B, k, 0, dtype=torch.long, device=device)
        attention = torch.zeros(B, k, 0, source.shape[1], device=device)
        done = torch.zeros(B, k, dtype=torch.bool, device=device)
        length = torch.zeros(B, k, device=device)
        rows = torch.arange(B, device=device).unsqueeze(1)
        for _ in range(max_length):
            logits, hidden, weights = self.decoder.step(tokens, hidden, memory, keys, mask)
            logp = logits.squeeze(1).log_softmax(-1).view(B, k, -1)                       # [B, k, V]
            # A finished hypothesis extends only by <pad>, at no cost: it keeps its score and place.
            ended = torch.full_like(logp, float("-inf"))
            ended[..., PAD] = 0.0
            logp = torch.where(done.unsqueeze(-1), ended, logp)
            vocab = logp.shape[-1]
            scores, flat = (scores.unsqueeze(-1) + logp).view(B, -1).topk(k, dim=1)       # [B, k]
            origin, word = flat // vocab, flat % vocab
            history = torch.cat([history[rows, origin], word.unsqueeze(-1)], -1)          # [B, k, t]
            step_weights = weights.view(B, k, 1, -1)[rows, origin]
            attention = torch.cat([attention[rows, origin], step_weights], 2)              # [B, k, t, S]
            length = length[rows, origin] + (~done[rows, origin]).float()
            done = done[rows, origin] | (word == EOS)
            hidden = hidden.view(hidden.shape[0], B, k, -1)[:, rows, origin].reshape(hidden.shape[0], B * k, -1)
            tokens = word.view(B * k, 1)
            if bool(done.all()):  # host sync once per step
                break
        # Unfinished hypotheses (no <eos> within max_length) rank after every finished one.
        ranked = scores / length.clamp(min=1) ** length_penalty
        ranked = torch.where(done, ranked, ranked - 1e9)
        best = ranked.argmax(1)                                                            # [B]
        return history[rows.squeeze(1), best], attention[rows.squeeze(1), best]


def _example_batch(n: int) -> SimpleNamespace:
    """``n`` pairs of 4 source and 3 target ids, as the fields of a ``PairBatch`` (the registry's example)."""
    return SimpleNamespace(source=torch.randint(3, 32, (n, 4)), lengths=torch.full((n,), 4),
                           target_in=torch.randint(3, 32, (n, 3)))


@register("seq2seq", example=Example(_example_batch, {"embed": 8, "hidden": 16}, classifier=False))
def seq2seq(**kwargs: object) -> Seq2Seq:
    """A GRU encoder-decoder with Bahdanau (additive) or Luong (dot-product) attention."""
    return Seq2Seq(Seq2SeqConfig(**kwargs))
