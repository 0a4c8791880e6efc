"""Char-RNN: text reading, stream batching, truncated BPTT, time budget, sampling (generated text, fast)."""
import json
import math
import os

import pytest
import torch

from conftest import assert_same_run
from nnlab.cli import main
from nnlab.data.text import StreamBatches, Vocab, read_text, split_stream
from nnlab.errors import ConfigError, DataError
from nnlab.models import create_model
from nnlab.models.rnn import TruncatedBPTT, detach_hidden
from nnlab.kinds import charlm
from nnlab.recipes import train as train_recipe

TINY = {"hidden_size": 32, "embed": 16, "layers": 1, "batch_size": 8, "bptt": 16, "eval_batch_size": 4,
        "device": "cpu", "plots": False}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A 12,000-character text with an easy pattern: a handful of words in a seeded order."""
    tmp_path = tmp_path_factory.mktemp("corpus")
    words = ["to be", "or not", "the king", "ROMEO:", "and thou"]
    gen = torch.Generator().manual_seed(0)
    picks = torch.randint(len(words), (2000,), generator=gen).tolist()
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(words[i] for i in picks), encoding="utf-8")
    return path


def test_stream_batches_follow_the_diagram():
    ids = torch.arange(24)
    windows = list(StreamBatches(ids, batch_size=4, bptt=2))
    assert len(windows) == len(StreamBatches(ids, 4, 2)) == 2
    (x0, y0), (x1, y1) = windows
    assert x0.tolist() == [[0, 1], [6, 7], [12, 13], [18, 19]]
    assert y0.tolist() == [1, 2, 7, 8, 13, 14, 19, 20]       # targets shifted by one, flattened
    assert x1[:, 0].tolist() == [2, 8, 14, 20]               # each row continues its stream


def test_stream_offsets_vary_and_stay_in_bounds():
    ids = torch.arange(1000)
    batches = StreamBatches(ids, 4, 10, shuffle_offset=True, generator=torch.Generator().manual_seed(0))
    firsts = set()
    for _ in range(20):
        windows = list(batches)
        assert len(windows) == len(batches)
        for x, y in windows:
            assert torch.equal(y.view(4, 10)[:, :-1], x[:, 1:])
        firsts.add(windows[0][0][0, 0].item())
    assert len(firsts) > 1


def test_too_short_text_is_a_data_error():
    with pytest.raises(DataError, match="too short"):
        StreamBatches(torch.arange(50), batch_size=8, bptt=10)


def test_vocab_round_trip_and_unknown_characters_are_named():
    vocab = Vocab.from_text("hello world")
    assert vocab.chars == " dehlorw"
    assert vocab.decode(vocab.encode("world")) == "world"
    with pytest.raises(DataError, match=r"--prime: 2 character\(s\) not in .*'Z', 'q'"):
        vocab.encode("qZ", "--prime")


@pytest.mark.parametrize("content, message", [(b"", "empty"), (b"  \n", "empty"), (b"ab\x00cd", "binary"),
                                              (b"caf\xe9", "not UTF-8")])
def test_bad_text_files_are_data_errors_naming_the_file(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(DataError, match=f"bad.txt: .*{message}"):
        read_text(path)


def test_validation_is_the_contiguous_tail():
    train, valid = split_stream(torch.arange(100), 0.1)
    assert train.tolist() == list(range(90)) and valid.tolist() == list(range(90, 100))


def _lstm(**kwargs):
    torch.manual_seed(0)
    return create_model("char_rnn", n_classes=11, embed=8, hidden=16, layers=2, dropout=0.0, **kwargs)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_carried_state_is_detached_so_gradients_stay_in_their_window(cell):
    model = _lstm(cell=cell)
    carried = TruncatedBPTT(model)
    x1, x2 = torch.randint(11, (3, 5)), torch.randint(11, (3, 5))
    loss1 = carried(x1).sum()
    loss1.backward()  # frees window 1's graph
    state = carried.hidden
    for h in (state if isinstance(state, tuple) else (state,)):
        assert h.grad_fn is None and not h.requires_grad
    model.zero_grad()
    carried(x2).sum().backward()  # would fail ("backward through the graph a second time") if attached
    grads = [p.grad.clone() for p in model.parameters()]
    # The same window run from the carried values as constants gives the very same gradients.
    model.zero_grad()
    constant = tuple(h.clone() for h in state) if isinstance(state, tuple) else state.clone()
    logits, _ = model.forward_sequence(x2, constant)
    logits.sum().backward()
    assert all(torch.allclose(g, p.grad) for g, p in zip(grads, model.parameters()))


def test_carried_state_does_flow_forward_between_windows():
    model = _lstm().eval()
    carried = TruncatedBPTT(model)
    x = torch.randint(11, (2, 4))
    fresh = carried(x)
    continued = carried(x)  # same input, but starting from the first window's final state
    assert not torch.allclose(fresh, continued)
    carried.reset()
    assert torch.allclose(carried(x), fresh)


def _graph(tensor):
    """The autograd nodes behind ``tensor``, and the bytes of the tensors they keep for the backward pass."""
    seen, stack, saved = set(), [tensor.grad_fn], {}
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        stack.extend(next_fn for next_fn, _ in node.next_functions)
        for name in dir(node):
            value = getattr(node, name) if name.startswith("_saved_") else None
            for kept in value if isinstance(value, (tuple, list)) else (value,):
                if isinstance(kept, torch.Tensor):
                    saved[kept.untyped_storage().data_ptr()] = kept.untyped_storage().nbytes()
    return len(seen), sum(saved.values())


def test_memory_stays_flat_over_1000_truncated_bptt_steps():
    torch.manual_seed(0)
    model = create_model("char_rnn", n_classes=11, embed=8, hidden=16, layers=1, dropout=0.0)
    carried = TruncatedBPTT(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randint(11, (4, 4))
    y = torch.randint(11, (4 * 4,))
    graphs = {}
    for step in range(1000):
        loss = torch.nn.functional.cross_entropy(carried(x), y)
        if step in (10, 999):
            graphs[step] = _graph(loss)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    # The graph (nodes, and the bytes it keeps for backward) does not grow with the number of windows.
    assert graphs[10] == graphs[999] and graphs[10][1] > 0


def test_detach_hidden_handles_none_tensors_and_pairs():
    assert detach_hidden(None) is None
    h = torch.ones(2, requires_grad=True) * 2
    assert detach_hidden(h).grad_fn is None
    assert all(t.grad_fn is None for t in detach_hidden((h, h * 3)))


def test_a_time_budget_runs_the_same_one_cycle_on_the_share_of_time_used():
    from nnlab.engine.schedules import one_cycle_factor, progress_factor
    lrs = [progress_factor("one-cycle", i / 100, 0.1) for i in range(101)]
    assert lrs[0] == pytest.approx(1 / 25) and lrs[10] == pytest.approx(1.0, abs=1e-4)
    assert lrs[100] == pytest.approx(1 / 25e4)
    assert all(a <= b for a, b in zip(lrs[:10], lrs[1:11])) and all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    # the step schedule's factor at the same share of a run of 1,000 steps
    assert progress_factor("one-cycle", 0.5, 0.1) == pytest.approx(one_cycle_factor(0.5 * 999, 1000, 0.1), abs=1e-3)


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    """A tiny LSTM trained for 3 passes over the corpus: the run directory (shared by the tests below)."""
    run = tmp_path_factory.mktemp("charlm") / "run"
    with open(os.devnull, "w") as quiet:
        train_recipe("shakespeare-lstm", out=run, overrides={"data": str(corpus), "epochs": 3, "lr": 1e-2, **TINY,
                                                                  "plots": True},
                     stream=quiet)
    return run


def test_training_reports_nats_and_bits_per_char_and_learns(trained):
    summary = json.loads((trained / "summary.json").read_text())
    assert summary["valid_bpc"] == pytest.approx(summary["valid_loss"] / math.log(2))
    assert summary["valid_loss"] < 0.8 * math.log(summary["vocab_size"])  # far better than uniform
    rows = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert (trained / "best.pt").is_file() and (trained / "curves.png").is_file()
    assert charlm.evaluate(trained)["valid_loss"] == pytest.approx(summary["valid_loss"], rel=1e-5)


def test_sample_starts_with_the_prime_and_is_seeded(trained):
    run = trained
    a = charlm.sample(run, prime="ROMEO:", length=50, temperature=0.8, top_k=5, seed=3)
    b = charlm.sample(run, prime="ROMEO:", length=50, temperature=0.8, top_k=5, seed=3)
    assert a["text"] == b["text"] and a["text"].startswith("ROMEO:") and len(a["text"]) == 56
    greedy = charlm.sample(run, prime="the ", length=30, top_k=1, seed=0)["text"]
    assert greedy == charlm.sample(run, prime="the ", length=30, top_k=1, seed=99)["text"]  # top-1 ignores the seed
    with pytest.raises(DataError, match="--prime: .*'Q'"):
        charlm.sample(run, prime="Q")
    with pytest.raises(ConfigError, match="--temperature"):
        charlm.sample(run, temperature=0)


def test_cli_sample_and_predict(trained, capsys):
    run = str(trained)
    assert main(["sample", run, "--prime", "to", "--length", "20", "--seed", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["text"].startswith("to") and len(out["text"]) == 22
    assert main(["predict", run, "ROMEO", "--top-k", "2", "--json"]) == 0
    top = json.loads(capsys.readouterr().out.strip().splitlines()[-1])[0]["top"]
    assert top[0]["class"] == ":" and len(top) == 2
    assert main(["sample", run, "--prime", "\u00e9"]) == 2
    assert "not in the model's vocabulary" in capsys.readouterr().err


def summary_lr(run_dir):
    return json.loads((run_dir / "config.json").read_text())["lr"]


def test_time_budget_stops_cleanly_and_keeps_the_best(corpus, tmp_path, ticking_clock):
    with open(os.devnull, "w") as quiet:
        summary = train_recipe("shakespeare-lstm", out=tmp_path / "budget",
                               overrides={"data": str(corpus), "time_budget": 2.0, **TINY}, stream=quiet)
    # Only the budget can end this run (its epoch limit is lifted): on a clock of 10 ms a reading, as it
    # runs out, whatever the host's speed.
    spent = torch.load(tmp_path / "budget" / "last.pt", weights_only=True)["budget_spent"]
    assert spent == pytest.approx(2.0, abs=0.05)
    assert summary["epochs"] >= 1 and summary["time_budget"] == 2.0
    rows = [json.loads(line) for line in (tmp_path / "budget" / "metrics.jsonl").read_text().splitlines()]
    assert summary["epochs"] == len(rows)
    assert rows[-1]["lr"] < 0.5 * summary_lr(tmp_path / "budget")  # annealed: the schedule fits the budget
    assert math.isfinite(summary["valid_loss"])
    best = torch.load(tmp_path / "budget" / "best.pt", weights_only=True)
    assert best["best"]["score"] == summary["valid_loss"] and isinstance(best["vocab"], str)


def test_cli_train_takes_time_budget_and_rejects_bad_settings(corpus, tmp_path, capsys):
    assert main(["train", "shakespeare-lstm", "--data", str(corpus), "--out", str(tmp_path / "r"), "--dry-run",
                 "--time-budget", "5", "--set", "hidden_size=16", "--set", "bptt=8", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["dry_run"] and summary["valid_bpc"] > 0
    assert main(["train", "shakespeare-lstm", "--data", str(corpus), "--set", "cell=rnn"]) == 2
    assert "cell: expected lstm or gru" in capsys.readouterr().err
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert main(["train", "shakespeare-lstm", "--data", str(empty), "--out", str(tmp_path / "e")]) == 2
    assert "empty text file" in capsys.readouterr().err


def test_interrupted_run_resumes_to_the_uninterrupted_result(corpus, tmp_path, capsys):
    overrides = {"data": str(corpus), "epochs": 3, "dropout": 0.2, "layers": 2, **TINY}
    with open(os.devnull, "w") as quiet:
        whole = train_recipe("shakespeare-lstm", out=tmp_path / "whole", overrides=overrides, stream=quiet)
        stopped = train_recipe("shakespeare-lstm", out=tmp_path / "cut", overrides={**overrides, "stop_after_epochs": 1},
                               stream=quiet)
    assert stopped["stopped_after_epochs"] == 1 and not (tmp_path / "cut" / "summary.json").exists()
    assert main(["train", "--resume", str(tmp_path / "cut"), "--json"]) == 0
    resumed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert_same_run(tmp_path / "cut", tmp_path / "whole")
    assert resumed["valid_loss"] == whole["valid_loss"] and resumed["steps"] == whole["steps"]
    assert main(["train", "--resume", str(tmp_path / "cut")]) == 2
    assert "already finished" in capsys.readouterr().err


def test_resumed_budget_run_spends_only_what_is_left(corpus, tmp_path, ticking_clock):
    # On a clock of 10 ms a reading an epoch here is about 2 s: the budget is two epochs, cut after one.
    overrides = {"data": str(corpus), "time_budget": 4.0, "stop_after_epochs": 1, **TINY}
    with open(os.devnull, "w") as quiet:
        train_recipe("shakespeare-lstm", out=tmp_path / "cut", overrides=overrides, stream=quiet)
        spent = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["budget_spent"]
        assert 1.0 < spent < 3.0
        before = ticking_clock.now
        summary = train_recipe(None, resume=tmp_path / "cut", stream=quiet)
    assert ticking_clock.now - before == pytest.approx(4.0 - spent, abs=0.1)  # what was left, not 4 s again
    rows = [json.loads(line) for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert summary["epochs"] == len(rows) >= 2
    assert rows[-1]["lr"] < 0.5 * summary_lr(tmp_path / "cut")  # the schedule went on from where it stopped


def test_resume_on_another_text_is_refused(corpus, tmp_path, capsys):
    with open(os.devnull, "w") as quiet:
        train_recipe("shakespeare-lstm", out=tmp_path / "cut",
                     overrides={"data": str(corpus), "epochs": 2, "stop_after_epochs": 1, **TINY}, stream=quiet)
    other = tmp_path / "other.txt"
    other.write_text("completely different letters: xyzq XYZQ 0123456789 " * 300, encoding="utf-8")
    assert main(["train", "--resume", str(tmp_path / "cut"), "--data", str(other)]) == 2
    assert "is not the text this run was trained on" in capsys.readouterr().err


def test_locked_dropout_holds_one_mask_over_the_time_steps_and_keeps_the_scale():
    from nnlab.models.rnn import LockedDropout
    drop = LockedDropout(0.5).train()
    out = drop(torch.ones(64, 30, 8))
    kept = out != 0
    assert torch.equal(kept, kept[:, :1].expand_as(kept))          # a unit is dropped at every step or none
    assert set(out.unique().tolist()) == {0.0, 2.0}                 # the kept ones scaled by 1 / (1 - p)
    assert 0.4 < kept[:, 0].float().mean().item() < 0.6
    assert torch.equal(drop.eval()(out), out)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_locked_dropout_stack_is_the_same_recurrence_as_the_fused_layers(cell):
    """Without dropout (eval), the stack of one-layer cells computes what nn.LSTM/GRU of L layers does."""
    torch.manual_seed(0)
    fused = create_model("char_rnn", n_classes=20, embed=8, hidden=12, layers=3, cell=cell).eval()
    locked = create_model("char_rnn", n_classes=20, embed=8, hidden=12, layers=3, cell=cell, locked_dropout=True).eval()
    weights = {k: v for k, v in fused.state_dict().items() if not k.startswith("rnn.")}
    for name, value in fused.rnn.state_dict().items():               # weight_ih_l2 -> layers.2.weight_ih_l0
        stem, layer = name.rsplit("_l", 1)
        weights[f"rnn.layers.{layer}.{stem}_l0"] = value
    locked.load_state_dict(weights)
    x = torch.randint(0, 20, (3, 7))
    (a, ha), (b, hb) = fused.forward_sequence(x), locked.forward_sequence(x)
    assert torch.allclose(a, b, atol=1e-6)
    for got, want in zip(*(h if isinstance(h, tuple) else (h,) for h in (hb, ha))):
        assert got.shape == want.shape and torch.allclose(got, want, atol=1e-6)
    # and it carries the state on: the second window from the first one's final state
    assert torch.allclose(fused.forward_sequence(x, ha)[0], locked.forward_sequence(x, hb)[0], atol=1e-6)


def test_a_locked_dropout_run_trains_samples_and_resumes(corpus, tmp_path, capsys):
    overrides = {"data": str(corpus), "epochs": 2, "dropout": 0.2, "layers": 2, "locked_dropout": True, **TINY}
    with open(os.devnull, "w") as quiet:
        whole = train_recipe("shakespeare-lstm", out=tmp_path / "whole", overrides=overrides, stream=quiet)
        train_recipe("shakespeare-lstm", out=tmp_path / "cut", overrides={**overrides, "stop_after_epochs": 1},
                     stream=quiet)
    assert main(["train", "--resume", str(tmp_path / "cut"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["valid_loss"] == whole["valid_loss"]
    assert_same_run(tmp_path / "cut", tmp_path / "whole")
    assert whole["valid_loss"] < math.log(whole["vocab_size"])       # it learned something
    assert main(["sample", str(tmp_path / "whole"), "--prime", "the ", "--length", "20"]) == 0
    assert capsys.readouterr().out.startswith("the ")
