"""The char LM kind's transformer (model=transformer) and word-level runs (tokens=word), on generated text (fast)."""
import json
import math
import os

import pytest
import torch

from conftest import assert_same_run, run_cli
from nnlab.data.text import UNK, WordVocab, join_words, split_three, split_words
from nnlab.errors import ConfigError
from nnlab.kinds import charlm
from nnlab.models import create_model
from nnlab.models.rnn import TruncatedBPTT
from nnlab.recipes import train as train_recipe

TINY = {"hidden_size": 32, "layers": 1, "batch_size": 8, "eval_batch_size": 4, "device": "cpu", "tensorboard": False,
        "plots": False}
TRANSFORMER = {**TINY, "model": "transformer", "heads": 2, "bptt": 16, "dropout": 0.0, "lr": 1e-2,
               "precision": "fp32"}
WORDS = {**TINY, "tokens": "word", "max_vocab": 12, "embed": 32, "bptt": 8, "lr": 1e-2}

pytestmark = pytest.mark.usefixtures("one_thread")


def _phrases(path, count):
    """A text with an easy pattern: ``count`` of a handful of phrases in a seeded order."""
    words = ["to be", "or not", "the king", "ROMEO:", "and thou", "O, fair Verona!"]
    gen = torch.Generator().manual_seed(0)
    picks = torch.randint(len(words), (count,), generator=gen).tolist()
    path.write_text("\n".join(words[i] for i in picks), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """About 12,000 characters (1,800 phrases)."""
    return _phrases(tmp_path_factory.mktemp("corpus") / "corpus.txt", 1800)


@pytest.fixture(scope="module")
def short(tmp_path_factory):
    """About 4,000 characters: for the tests that train three runs."""
    return _phrases(tmp_path_factory.mktemp("short") / "short.txt", 600)


def _quiet_train(out, overrides, recipe="shakespeare-lstm"):
    with open(os.devnull, "w") as quiet:
        return train_recipe(recipe, out=out, overrides=overrides, stream=quiet)


def _transformer(context=8, **kwargs):
    torch.manual_seed(0)
    return create_model("char_transformer", n_classes=11, context=context, width=16, layers=2, heads=2,
                        dropout=0.0, **kwargs).eval()


def test_transformer_is_causal_a_later_token_changes_no_earlier_logit():
    model = _transformer()
    x = torch.randint(11, (2, 8))
    changed = x.clone()
    changed[:, 5] = (changed[:, 5] + 1) % 11
    a, _ = model.forward_sequence(x)
    b, _ = model.forward_sequence(changed)
    assert torch.allclose(a[:, :5], b[:, :5], atol=1e-6)
    assert not torch.allclose(a[:, 5:], b[:, 5:])


def test_transformer_reads_a_window_after_the_last_ids_of_its_state():
    model = _transformer(context=8)
    first, second = torch.randint(11, (3, 8)), torch.randint(11, (3, 4))
    _, state = model.forward_sequence(first)
    assert state.shape == (1, 3, 7)                      # [1, B, context - 1], laid out like an RNN state
    continued, _ = model.forward_sequence(second, state)
    # the same as reading the last 4 ids of the first window and the new 4 at once (8 = context)
    direct, _ = model.forward_sequence(torch.cat([first[:, 4:], second], 1))
    assert torch.allclose(continued, direct[:, 4:], atol=1e-5)


def test_transformer_one_token_at_a_time_gives_the_whole_window_logits():
    model = _transformer(context=8)
    x = torch.randint(11, (1, 8))
    whole, _ = model.forward_sequence(x)
    state, steps = None, []
    for t in range(8):
        logits, state = model.forward_sequence(x[:, t:t + 1], state)
        steps.append(logits)
    assert torch.allclose(torch.cat(steps, 1), whole, atol=1e-5)
    long, state = model.forward_sequence(torch.randint(11, (1, 21)))  # longer than its context: read in pieces
    assert long.shape == (1, 21, 11) and state.shape == (1, 1, 7)


def test_transformer_ties_its_head_to_the_embedding_unless_told_not_to():
    tied, untied = _transformer(), _transformer(tie_weights=False)
    assert tied.head.weight is tied.embed.weight and untied.head.weight is not untied.embed.weight
    assert sum(p.numel() for p in untied.parameters()) - sum(p.numel() for p in tied.parameters()) == 11 * 16
    with pytest.raises(ValueError, match="heads"):
        create_model("char_transformer", width=10, heads=4)


def test_transformer_state_is_carried_by_truncated_bptt():
    model = _transformer(context=8)
    carried = TruncatedBPTT(model)
    x = torch.randint(11, (2, 4))
    fresh = carried(x)
    assert not torch.allclose(carried(x), fresh)         # the second window read the first as context
    carried.reset()
    assert torch.allclose(carried(x), fresh)


@pytest.fixture(scope="module")
def transformer_run(corpus, tmp_path_factory):
    run = tmp_path_factory.mktemp("transformer") / "run"
    _quiet_train(run, {"data": str(corpus), "epochs": 2, **TRANSFORMER})
    return run


def test_transformer_run_learns_evaluates_and_samples(transformer_run, capsys):
    summary = json.loads((transformer_run / "summary.json").read_text())
    assert summary["model"] == "char_transformer" and summary["tokens"] == "char"
    assert summary["valid_loss"] < 0.5 * math.log(summary["vocab_size"])   # far better than uniform
    assert summary["valid_bpc"] == pytest.approx(summary["valid_loss"] / math.log(2))
    assert charlm.evaluate(transformer_run)["valid_loss"] == pytest.approx(summary["valid_loss"], rel=1e-5)
    a = charlm.sample(transformer_run, prime="ROMEO:", length=40, top_k=3, seed=2)
    assert a["text"] == charlm.sample(transformer_run, prime="ROMEO:", length=40, top_k=3, seed=2)["text"]
    assert a["text"].startswith("ROMEO:") and len(a["text"]) == 46
    code, out, _ = run_cli(capsys, "predict", str(transformer_run), "ROMEO", "--top-k", "1", "--json")
    assert code == 0 and json.loads(out.strip().splitlines()[-1])[0]["top"][0]["class"] == ":"


def test_transformer_validates_on_half_windows_after_the_preceding_text(corpus):
    config = charlm.CharLMConfig(**TRANSFORMER)
    assert config.valid_window == 8 and charlm.CharLMConfig(bptt=100).valid_window == 100
    assert charlm.CharLMConfig(**{**TRANSFORMER, "eval_bptt": 4}).valid_window == 4


def test_bad_transformer_and_word_settings_are_one_line_errors(corpus, tmp_path, capsys):
    base = ["train", "shakespeare-lstm", "--data", str(corpus), "--out", str(tmp_path / "r")]
    for setting, message in (("model=gpt", "model: expected rnn or transformer"),
                             ("heads=3", "must divide into heads=3"), ("eval_bptt=500", "eval_bptt must be in"),
                             ("tokens=bytes", "tokens: expected char or word"), ("max_vocab=1", "max_vocab")):
        extra = ["--model", "transformer", "--set", "hidden_size=32"] if setting == "heads=3" else []
        code, _, err = run_cli(capsys, *base, *extra, "--set", setting)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "r").exists()


def test_transformer_run_resumes_to_the_uninterrupted_result(short, tmp_path, capsys):
    overrides = {"data": str(short), "epochs": 2, **TRANSFORMER, "dropout": 0.1}
    whole = _quiet_train(tmp_path / "whole", overrides)
    _quiet_train(tmp_path / "cut", {**overrides, "stop_after_epochs": 1})
    code, out, _ = run_cli(capsys, "train", "--resume", str(tmp_path / "cut"), "--json")
    assert code == 0
    assert_same_run(tmp_path / "cut", tmp_path / "whole")
    assert json.loads(out.strip().splitlines()[-1])["valid_loss"] == whole["valid_loss"]


def test_words_split_and_join_back_as_prose():
    text = "ROMEO:\nO, she's fair -- 'tis well-known.\n\nJULIET:"
    tokens = split_words(text)
    assert tokens[:6] == ["ROMEO", ":", "\n", "O", ",", "she's"]
    assert tokens.count("\n") == 3 and "'" in tokens and "-" in tokens
    assert join_words(tokens) == "ROMEO:\nO, she's fair--'tis well-known.\n\nJULIET:"
    assert join_words(["the", "king"], after="O") == " the king" and join_words([","], after="O") == ","


def test_word_vocabulary_is_capped_with_unk_first_and_ties_alphabetical():
    vocab = WordVocab.from_tokens("b a c a b a d".split(), max_vocab=3)
    assert vocab.words == (UNK, "a", "b")                # a x3, b x2; c and d (once each) fall off the cap
    assert vocab.ids(["a", "zebra", "b"]).tolist() == [1, 0, 2]
    assert vocab.unknown(["zebra", "a", "yak", "zebra"]) == ["zebra", "yak"]
    assert vocab.decode([1, 2]) == "a b" and WordVocab.from_tokens("y x".split(), 2).words == (UNK, "x")


def test_word_text_splits_train_valid_test_in_order():
    train, valid, test = split_three(list(range(100)), 0.1, 0.2)
    assert (train, valid, test) == (list(range(70)), list(range(70, 80)), list(range(80, 100)))


@pytest.fixture(scope="module")
def word_run(corpus, tmp_path_factory):
    run = tmp_path_factory.mktemp("words") / "run"
    _quiet_train(run, {"data": str(corpus), "epochs": 3, "tie_weights": True, **WORDS})
    return run


def test_word_run_reports_perplexity_per_word_on_valid_and_test(word_run):
    summary = json.loads((word_run / "summary.json").read_text())
    assert summary["tokens"] == "word" and summary["vocab_size"] == 12 and "valid_bpc" not in summary
    assert summary["valid_perplexity"] == pytest.approx(math.exp(summary["valid_loss"]))
    assert summary["test_perplexity"] == pytest.approx(math.exp(summary["test_loss"]))
    assert summary["valid_perplexity"] < 4 < 12                             # the phrases are easy to guess
    assert 0 < summary["valid_unk_share"] < 0.3 and summary["tokens_per_s"] > 0
    again = charlm.evaluate(word_run)
    assert again["valid_loss"] == pytest.approx(summary["valid_loss"], rel=1e-5)
    assert again["test_perplexity"] == pytest.approx(summary["test_perplexity"], rel=1e-5)
    best = torch.load(word_run / "best.pt", weights_only=True)
    assert best["vocab"][0] == UNK and best["model_args"]["tie_weights"] is True


def test_word_sample_generates_words_and_reads_unknown_prime_words_as_unk(word_run, capsys):
    # the vocabulary of 12 keeps "the" and "king", not "ROMEO", ":", "O", "fair", "Verona" (nor "Juliet")
    result = charlm.sample(word_run, prime="the Juliet", length=30, seed=1)
    assert result["text"].startswith("the Juliet") and len(result["words"]) == 30
    assert UNK not in result["words"]                                       # never drawn
    assert result["warnings"] and "'Juliet'" in result["warnings"][0] and "<unk>" in result["warnings"][0]
    assert "warning: --prime: 1 word(s)" in capsys.readouterr().err
    assert charlm.sample(word_run, prime="the Juliet", length=30, seed=1)["text"] == result["text"]
    assert charlm.sample(word_run, length=5)["text"].startswith("\n")       # the default prime: a line break
    capsys.readouterr()
    code, out, err = run_cli(capsys, "sample", str(word_run), "--prime", "the", "--length", "6")
    assert code == 0 and out.startswith("the ") and not err
    for prime in ("", "   "):
        code, _, err = run_cli(capsys, "sample", str(word_run), "--prime", prime)
        assert code == 2 and "needs at least one word" in err and len(err.strip().splitlines()) == 1
    code, out, _ = run_cli(capsys, "predict", str(word_run), "the", "--top-k", "1", "--json")
    assert code == 0 and json.loads(out.strip().splitlines()[-1])[0]["top"][0]["class"] == "king"


def test_word_run_resumes_to_the_uninterrupted_result_and_refuses_another_text(short, tmp_path, capsys):
    overrides = {"data": str(short), "epochs": 2, **WORDS, "dropout": 0.2}
    whole = _quiet_train(tmp_path / "whole", overrides)
    _quiet_train(tmp_path / "cut", {**overrides, "stop_after_epochs": 1})
    other = tmp_path / "other.txt"
    other.write_text("quite other words here and there " * 400, encoding="utf-8")
    code, _, err = run_cli(capsys, "train", "--resume", str(tmp_path / "cut"), "--data", str(other))
    assert code == 2 and "its words differ" in err
    code, out, _ = run_cli(capsys, "train", "--resume", str(tmp_path / "cut"), "--json")
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["test_loss"] == whole["test_loss"]
    assert_same_run(tmp_path / "cut", tmp_path / "whole")


def test_a_char_run_written_before_these_settings_still_evaluates_samples_and_resumes(short, tmp_path, capsys):
    """A config.json without model/tokens/heads/eval_bptt/max_vocab (today's main wrote none) is a char LSTM."""
    overrides = {"data": str(short), "epochs": 2, "embed": 16, "bptt": 16, **TINY}
    whole = _quiet_train(tmp_path / "whole", overrides)
    _quiet_train(tmp_path / "cut", {**overrides, "stop_after_epochs": 1})
    for run in ("whole", "cut"):
        path = tmp_path / run / "config.json"
        config = json.loads(path.read_text())
        for key in ("model", "heads", "eval_bptt", "tokens", "max_vocab"):
            del config[key]
        path.write_text(json.dumps(config))
    assert charlm.evaluate(tmp_path / "whole")["valid_loss"] == pytest.approx(whole["valid_loss"], rel=1e-6)
    assert charlm.sample(tmp_path / "whole", prime="to", length=10)["text"].startswith("to")
    code, out, _ = run_cli(capsys, "train", "--resume", str(tmp_path / "cut"), "--json")
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["valid_loss"] == whole["valid_loss"]
    with pytest.raises(ConfigError, match="--prime must hold at least one character"):
        charlm.sample(tmp_path / "whole", prime="")
