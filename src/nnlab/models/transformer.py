"""A small causal transformer language model (a GPT in the manner of nanoGPT's ``model.py``).

``char_transformer``: token and position embeddings -> pre-norm blocks (LayerNorm ->
multi-head causal self-attention with ``torch.nn.functional.scaled_dot_product_attention``,
``is_causal=True``; LayerNorm -> MLP of 4x the width with GELU), each added to the residual
stream -> LayerNorm -> a linear head over the vocabulary whose weight is the token embedding's
(weight tying, by default). Like ``char_rnn`` it takes ids ``x [B, T]`` and ``forward`` gives
logits ``[B*T, V]``; ``forward_sequence(x, state)`` gives ``[B, T, V]`` and a new state, so the
char LM kind trains, validates and samples both families through one path.

The state of a transformer is the text it has read: the last ``context - 1`` ids,
``[1, B, P]`` (laid out like an RNN's hidden state ``[layers, B, H]``, so ``TruncatedBPTT``
carries and checks it alike). A window of ``T`` new ids is read after the last
``context - T`` ids of the state, so every position sees at most ``context`` ids::

    context = 8, window T = 4 (validation: half the training window)
    state:  . . . . a b c d        ids read:  a b c d | e f g h
    window:         e f g h        logits for e f g h only (each sees 4..7 ids before it)

In training the window is the whole context (``T = context``): nothing of the state is read, so
windows are independent and gradients never cross them. In validation (``T < context``) and
sampling (``T = 1``) each position gets up to ``context - 1`` ids of preceding text. A window
longer than ``context`` is read in pieces of ``context``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from nnlab.models.registry import Classifier, Example, register, tokens


@dataclass
class CharTransformerConfig:
    """Sizes of a causal transformer LM: ``width`` must divide into ``heads``; ``context`` is the
    longest window it reads (its number of position embeddings)."""

    vocab_size: int = 65
    context: int = 128
    width: int = 128
    layers: int = 4
    heads: int = 4
    dropout: float = 0.1
    tie_weights: bool = True


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention in which position ``t`` attends to positions ``<= t`` only."""

    def __init__(self, config: CharTransformerConfig) -> None:
        super().__init__()
        self.heads = config.heads
        self.qkv = nn.Linear(config.width, 3 * config.width)
        self.proj = nn.Linear(config.width, config.width)
        self.dropout = config.dropout
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)                                    # each [B, T, C]
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))  # [B, h, T, C/h]
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                             dropout_p=self.dropout if self.training else 0.0)
        out = out.transpose(1, 2).reshape(b, t, c)                               # [B, h, T, C/h] -> [B, T, C]
        return self.drop(self.proj(out))


class Block(nn.Module):
    """``x + attention(norm(x))``, then ``x + mlp(norm(x))`` (pre-norm: the residual stream stays un-normalised)."""

    def __init__(self, config: CharTransformerConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(config.width)
        self.attn = CausalSelfAttention(config)
        self.norm2 = nn.LayerNorm(config.width)
        self.mlp = nn.Sequential(nn.Linear(config.width, 4 * config.width), nn.GELU(),
                                 nn.Linear(4 * config.width, config.width), nn.Dropout(config.dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class CharTransformer(Classifier):
    """Token + position embeddings -> ``layers`` pre-norm blocks -> LayerNorm -> linear over the vocabulary."""

    def __init__(self, config: CharTransformerConfig) -> None:
        super().__init__()
        if config.width % config.heads:
            raise ValueError(f"width {config.width} does not split into {config.heads} heads")
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.width)
        self.position = nn.Embedding(config.context, config.width)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.layers)])
        self.norm = nn.LayerNorm(config.width)
        self.head = nn.Linear(config.width, config.vocab_size, bias=False)
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2: residual projections scaled by depth
            if name.endswith(("proj.weight", "mlp.2.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / (2 * config.layers) ** 0.5)
        if config.tie_weights:
            self.head.weight = self.embed.weight

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        """The final normalised residual stream ``[B, T, C]`` of ids ``x [B, T]`` (``T <= context``)."""
        positions = torch.arange(x.shape[1], device=x.device)
        h = self.drop(self.embed(x) + self.position(positions))                 # [B, T, C]
        for block in self.blocks:
            h = block(h)
        return self.norm(h)

    def _window(self, x: torch.Tensor, state: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``[B, T, V]`` of a window ``x [B, T]`` (``T <= context``) read after the state's last ids."""
        keep = self.config.context - x.shape[1]
        if state is not None and keep > 0:
            x_all = torch.cat([state[0, :, -keep:], x], dim=1)                   # [B, P + T], P + T <= context
        else:
            x_all = x
        logits = self.head(self._features(x_all)[:, x_all.shape[1] - x.shape[1]:])  # the window's positions only
        return logits, x_all[:, -(self.config.context - 1):].unsqueeze(0)        # state [1, B, <= context - 1]

    def forward_sequence(self, x: torch.Tensor, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``[B, T, V]`` for ids ``x [B, T]`` read after ``state`` (see the module's docstring), and the new state."""
        pieces = []
        for piece in x.split(self.config.context, dim=1):
            logits, state = self._window(piece, state)
            pieces.append(logits)
        return torch.cat(pieces, dim=1) if len(pieces) > 1 else pieces[0], state

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The final normalised stream at every position, ``[B*T, C]`` (from no preceding text)."""
        h = self._features(x)
        return h.reshape(-1, h.shape[-1])                                        # [B, T, C] -> [B*T, C]

    def layer_groups(self) -> list[nn.Module]:
        groups: list[nn.Module] = [nn.ModuleList([self.embed, self.position]), nn.ModuleList([*self.blocks, self.norm])]
        if self.head.weight is not self.embed.weight:  # tied: the head owns no parameter of its own
            groups.append(self.head)
        return groups


@register("char_transformer", example=Example(tokens(1)))  # one position per row
def char_transformer(n_classes: int = 65, **kwargs: object) -> CharTransformer:
    """Causal transformer language model over a vocabulary of ``n_classes`` tokens (characters or words)."""
    return CharTransformer(CharTransformerConfig(vocab_size=n_classes, **kwargs))
