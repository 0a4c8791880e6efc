"""The training loops of the PyTorch tutorials, written out as a learner copies them.

``nnlab speedrun --baselines`` times these against nnlab's recipes on the same data, so each is
kept as its tutorial has it (network, optimizer, batching, loss, defaults), one epoch per call;
what they are trained on and when they stop is the caller's business.

- ``ExamplesNet`` / ``examples_train_epoch``: pytorch/examples ``mnist/main.py`` (two convs,
  dropout, Adadelta lr 1.0 with StepLR 0.7, a torchvision dataset through a ``DataLoader`` of 64).
- ``TutorialRNN`` / ``names_train_epoch``: "Classifying Names with a Character-Level RNN" (one-hot
  letters, ``nn.RNN`` of 128, each name run alone, 64 names' losses summed per SGD step at lr 0.15).
- ``RNNModel`` / ``lm_train_epoch``: pytorch/examples ``word_language_model`` (2-layer LSTM of 200,
  20 streams x 35 steps, plain SGD at lr 20, clip 0.25, lr / 4 when validation does not improve).
- ``EncoderRNN`` / ``AttnDecoderRNN`` / ``seq2seq_train_epoch``: "Translation with a Sequence to
  Sequence Network and Attention" (GRU encoder, Bahdanau attention, teacher forcing, two Adams at
  lr 1e-3, batches of 32 padded to ``MAX_LENGTH``, NLL over every position).
"""
from __future__ import annotations

import random
import string
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class ExamplesNet(nn.Module):
    """The network of pytorch/examples mnist/main.py, unchanged (it returns log-probabilities)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(self.dropout1(x), 1)
        x = self.dropout2(F.relu(self.fc1(x)))
        return F.log_softmax(self.fc2(x), dim=1)


def examples_train_epoch(model: nn.Module, loader: torch.utils.data.DataLoader, optimizer: torch.optim.Optimizer,
                         device: torch.device) -> None:
    """The examples' ``train``: one pass over ``loader``, NLL loss, a step per batch."""
    model.train()
    for data, target in loader:
        data, target = data.to(device), target.to(device)
        optimizer.zero_grad()
        loss = F.nll_loss(model(data), target)
        loss.backward()
        optimizer.step()


@torch.no_grad()
def examples_test(model: nn.Module, loader: torch.utils.data.DataLoader, device: torch.device) -> float:
    """The examples' ``test``: the share of ``loader``'s images classified right."""
    model.eval()
    correct = total = 0
    for data, target in loader:
        pred = model(data.to(device)).argmax(dim=1)
        correct += (pred == target.to(device)).sum().item()
        total += len(target)
    return correct / total


# The names tutorial's alphabet: ASCII letters and " .,;'", plus "_" for anything else.
TUTORIAL_LETTERS = string.ascii_letters + " .,;'" + "_"


def line_to_tensor(line: str) -> torch.Tensor:
    """The names tutorial's encoding: one-hot letters ``[L, 1, 58]``."""
    tensor = torch.zeros(len(line), 1, len(TUTORIAL_LETTERS))
    for i, letter in enumerate(line):
        tensor[i][0][TUTORIAL_LETTERS.find(letter) if letter in TUTORIAL_LETTERS else -1] = 1
    return tensor


class TutorialRNN(nn.Module):
    """The names tutorial's ``CharRNN``: nn.RNN -> linear on the final state -> LogSoftmax."""

    def __init__(self, input_size: int, hidden_size: int, output_size: int) -> None:
        super().__init__()
        self.rnn = nn.RNN(input_size, hidden_size)
        self.h2o = nn.Linear(hidden_size, output_size)
        self.softmax = nn.LogSoftmax(dim=1)

    def forward(self, line_tensor: torch.Tensor) -> torch.Tensor:
        _, hidden = self.rnn(line_tensor)
        return self.softmax(self.h2o(hidden[0]))


def names_train_epoch(model: TutorialRNN, tensors: Sequence[torch.Tensor], targets: Sequence[torch.Tensor],
                      optimizer: torch.optim.Optimizer, rng: random.Random, batch: int = 64,
                      clip: float = 3.0) -> None:
    """One epoch of the tutorial's ``train``: the names shuffled and cut into ``len // 64`` batches
    (``numpy.array_split``), each name's NLL summed over its batch, one SGD step per batch."""
    criterion = nn.NLLLoss()
    model.train()
    order = list(range(len(tensors)))
    rng.shuffle(order)
    n_batches = max(len(order) // batch, 1)
    for k in range(n_batches):
        chunk = order[k * len(order) // n_batches: (k + 1) * len(order) // n_batches]
        loss = sum(criterion(model(tensors[i]), targets[i]) for i in chunk)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        optimizer.zero_grad()


@torch.no_grad()
def names_predict(model: TutorialRNN, names: Sequence[str]) -> torch.Tensor:
    """The tutorial's evaluation, a name at a time: each name's class probabilities ``[N, C]``."""
    model.eval()
    return torch.cat([model(line_to_tensor(name)).exp() for name in names])


class RNNModel(nn.Module):
    """word_language_model's ``RNNModel`` (LSTM): encoder, dropout, LSTM, dropout, decoder, log-softmax."""

    def __init__(self, ntoken: int, ninp: int = 200, nhid: int = 200, nlayers: int = 2, dropout: float = 0.2) -> None:
        super().__init__()
        self.ntoken, self.nhid, self.nlayers = ntoken, nhid, nlayers
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(ntoken, ninp)
        self.rnn = nn.LSTM(ninp, nhid, nlayers, dropout=dropout)
        self.decoder = nn.Linear(nhid, ntoken)
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        nn.init.uniform_(self.decoder.weight, -0.1, 0.1)

    def forward(self, input: torch.Tensor, hidden: tuple[torch.Tensor, torch.Tensor]
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        emb = self.drop(self.encoder(input))
        output, hidden = self.rnn(emb, hidden)
        decoded = self.decoder(self.drop(output)).view(-1, self.ntoken)  # [T * B, V]
        return F.log_softmax(decoded, dim=1), hidden

    def init_hidden(self, bsz: int) -> tuple[torch.Tensor, torch.Tensor]:
        weight = next(self.parameters())
        return weight.new_zeros(self.nlayers, bsz, self.nhid), weight.new_zeros(self.nlayers, bsz, self.nhid)


def batchify(data: torch.Tensor, bsz: int) -> torch.Tensor:
    """word_language_model's layout: the stream cut into ``bsz`` columns, read top to bottom.

    ``a b c d e f g h i j k l`` with ``bsz = 3`` ->::

        a e i
        b f j      [T, B]: row t holds step t of every stream
        c g k
        d h l
    """
    nbatch = data.size(0) // bsz
    return data.narrow(0, 0, nbatch * bsz).view(bsz, -1).t().contiguous()  # [T, B]


def get_batch(source: torch.Tensor, i: int, bptt: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``i..i+bptt`` of ``source`` and the next token of each, flattened ``[T * B]``."""
    seq_len = min(bptt, len(source) - 1 - i)
    return source[i:i + seq_len], source[i + 1:i + 1 + seq_len].reshape(-1)


def repackage_hidden(h: torch.Tensor | tuple) -> torch.Tensor | tuple:
    """The state detached from its history (truncated backpropagation through time)."""
    return h.detach() if isinstance(h, torch.Tensor) else tuple(repackage_hidden(v) for v in h)


def lm_train_epoch(model: RNNModel, train_data: torch.Tensor, lr: float, bptt: int = 35, clip: float = 0.25) -> None:
    """word_language_model's ``train``: every window once, the state carried, SGD written out by hand."""
    criterion = nn.NLLLoss()
    model.train()
    hidden = model.init_hidden(train_data.size(1))
    for i in range(0, train_data.size(0) - 1, bptt):
        data, targets = get_batch(train_data, i, bptt)
        hidden = repackage_hidden(hidden)
        model.zero_grad()
        output, hidden = model(data, hidden)
        loss = criterion(output, targets)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), clip)
        for p in model.parameters():
            p.data.add_(p.grad, alpha=-lr)


@torch.no_grad()
def lm_evaluate(model: RNNModel, data_source: torch.Tensor, bptt: int = 35) -> float:
    """word_language_model's ``evaluate``: mean NLL per token (nats) over a batchified held-out stream."""
    criterion = nn.NLLLoss()
    model.eval()
    total = 0.0
    hidden = model.init_hidden(data_source.size(1))
    for i in range(0, data_source.size(0) - 1, bptt):
        data, targets = get_batch(data_source, i, bptt)
        output, hidden = model(data, hidden)
        total += len(data) * criterion(output, targets).item()
    return total / (len(data_source) - 1)


SOS_TOKEN, EOS_TOKEN = 0, 1


class EncoderRNN(nn.Module):
    """The seq2seq tutorial's encoder: embedding, dropout, a GRU (batch first)."""

    def __init__(self, input_size: int, hidden_size: int, dropout_p: float = 0.1) -> None:
        super().__init__()
        self.embedding = nn.Embedding(input_size, hidden_size)
        self.gru = nn.GRU(hidden_size, hidden_size, batch_first=True)
        self.dropout = nn.Dropout(dropout_p)

    def forward(self, input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.gru(self.dropout(self.embedding(input)))


class BahdanauAttention(nn.Module):
    """The tutorial's additive attention: ``Va . tanh(Wa q + Ua k)`` softmaxed over the source."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.Wa = nn.Linear(hidden_size, hidden_size)
        self.Ua = nn.Linear(hidden_size, hidden_size)
        self.Va = nn.Linear(hidden_size, 1)

    def forward(self, query: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.Va(torch.tanh(self.Wa(query) + self.Ua(keys))).squeeze(2).unsqueeze(1)  # [B, 1, S]
        weights = F.softmax(scores, dim=-1)
        return torch.bmm(weights, keys), weights


class AttnDecoderRNN(nn.Module):
    """The tutorial's decoder: ``max_length`` steps from SOS, teacher-forced when given the targets."""

    def __init__(self, hidden_size: int, output_size: int, max_length: int, dropout_p: float = 0.1) -> None:
        super().__init__()
        self.max_length = max_length
        self.embedding = nn.Embedding(output_size, hidden_size)
        self.attention = BahdanauAttention(hidden_size)
        self.gru = nn.GRU(2 * hidden_size, hidden_size, batch_first=True)
        self.out = nn.Linear(hidden_size, output_size)
        self.dropout = nn.Dropout(dropout_p)

    def forward(self, encoder_outputs: torch.Tensor, encoder_hidden: torch.Tensor,
                target_tensor: torch.Tensor | None = None) -> torch.Tensor:
        batch_size = encoder_outputs.size(0)
        decoder_input = torch.full((batch_size, 1), SOS_TOKEN, dtype=torch.long, device=encoder_outputs.device)
        decoder_hidden = encoder_hidden
        decoder_outputs = []
        for i in range(self.max_length):
            decoder_output, decoder_hidden = self.forward_step(decoder_input, decoder_hidden, encoder_outputs)
            decoder_outputs.append(decoder_output)
            if target_tensor is not None:
                decoder_input = target_tensor[:, i].unsqueeze(1)  # teacher forcing
            else:
                decoder_input = decoder_output.topk(1)[1].squeeze(-1).detach()
        return F.log_softmax(torch.cat(decoder_outputs, dim=1), dim=-1)  # [B, max_length, V]

    def forward_step(self, input: torch.Tensor, hidden: torch.Tensor,
                     encoder_outputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedded = self.dropout(self.embedding(input))
        context, _ = self.attention(hidden.permute(1, 0, 2), encoder_outputs)
        output, hidden = self.gru(torch.cat((embedded, context), dim=2), hidden)
        return self.out(output), hidden


def seq2seq_train_epoch(loader: torch.utils.data.DataLoader, encoder: EncoderRNN, decoder: AttnDecoderRNN,
                        encoder_optimizer: torch.optim.Optimizer, decoder_optimizer: torch.optim.Optimizer) -> None:
    """The tutorial's ``train_epoch``: NLL over every target position (padding included, as there)."""
    criterion = nn.NLLLoss()
    encoder.train()
    decoder.train()
    for input_tensor, target_tensor in loader:
        encoder_optimizer.zero_grad()
        decoder_optimizer.zero_grad()
        encoder_outputs, encoder_hidden = encoder(input_tensor)
        decoder_outputs = decoder(encoder_outputs, encoder_hidden, target_tensor)
        loss = criterion(decoder_outputs.view(-1, decoder_outputs.size(-1)), target_tensor.view(-1))
        loss.backward()
        encoder_optimizer.step()
        decoder_optimizer.step()


@torch.no_grad()
def seq2seq_decode(encoder: EncoderRNN, decoder: AttnDecoderRNN, inputs: torch.Tensor) -> list[list[int]]:
    """The tutorial's ``evaluate``, a batch at a time: greedy ids up to (without) the first EOS."""
    encoder.eval()
    decoder.eval()
    encoder_outputs, encoder_hidden = encoder(inputs)
    ids = decoder(encoder_outputs, encoder_hidden).argmax(-1).tolist()
    return [row[:row.index(EOS_TOKEN)] if EOS_TOKEN in row else row for row in ids]
