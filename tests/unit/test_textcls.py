"""Text classification: tokenizer, vocabulary, packing, training on generated reviews, eval, predict, bad CSVs."""
import contextlib
import csv
import io
import json

import pytest
import torch

from conftest import assert_same_run, write_csv
from nnlab.cli import main
from nnlab.config import load_config
from nnlab.data.textcls import TokenBatches, Vocab, build_vocab, encode_texts, load_text_csv, tokenize
from nnlab.errors import DataError
from nnlab.models import create_model
from nnlab.kinds import textcls

pytestmark = pytest.mark.usefixtures("one_thread")

POSITIVE = "great superb lovely wonderful excellent brilliant delightful charming".split()
NEGATIVE = "awful terrible boring dreadful horrible poor dull clumsy".split()
NOISE = ("the a film movie plot actor scene story it was and of to in this that with script camera music "
         "ending cast director").split()
TINY = ["--set", "hidden_size=16", "--set", "embed=16", "--set", "threads=1", "--set", "dropout=0.1",
        "--set", "plots=false"]


def write_reviews(path, n=400, seed=0):
    """``n`` generated 'reviews': 6-12 noise words with one or two sentiment words at random places.

    The sentiment words decide the label, so a model that reads the words learns it; punctuation,
    capitals and quoted commas exercise the tokenizer and the CSV reader.
    """
    gen = torch.Generator().manual_seed(seed)

    def pick(words):
        return words[int(torch.randint(len(words), (1,), generator=gen))]

    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "review", "sentiment"])
        for i in range(n):
            label = "pos" if i % 2 == 0 else "neg"
            words = [pick(NOISE) for _ in range(int(torch.randint(6, 13, (1,), generator=gen)))]
            for _ in range(int(torch.randint(1, 3, (1,), generator=gen))):
                spot = int(torch.randint(len(words) + 1, (1,), generator=gen))
                words.insert(spot, pick(POSITIVE if label == "pos" else NEGATIVE))
            text = " ".join(words).capitalize() + (", really!" if i % 3 == 0 else ".")
            writer.writerow([i, text, label])
    return path


@pytest.fixture(scope="module")
def reviews(tmp_path_factory):
    return write_reviews(tmp_path_factory.mktemp("reviews") / "reviews.csv")


def run_cli(argv):
    """``nnlab ARGV``'s exit code and its last stdout line as JSON, with progress output swallowed."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    lines = out.getvalue().strip().splitlines()
    return code, (json.loads(lines[-1]) if code == 0 else err.getvalue())


def test_tokenize_lowercases_and_splits_punctuation_but_keeps_apostrophes():
    assert tokenize("Don't  PANIC!  It's 42, ok?") == ["don't", "panic", "!", "it's", "42", ",", "ok", "?"]
    assert tokenize("   ") == []


def test_build_vocab_ranks_by_frequency_caps_and_drops_rare_tokens():
    docs = [["b", "a", "a"], ["c", "b", "a"], ["d", "c"]]
    vocab = build_vocab(docs, max_vocab=100, min_freq=1)
    assert vocab.tokens == ["<pad>", "<unk>", "a", "b", "c", "d"]   # ties (b, c: 2 each) alphabetical
    assert build_vocab(docs, max_vocab=4).tokens == ["<pad>", "<unk>", "a", "b"]
    assert build_vocab(docs, max_vocab=100, min_freq=2).tokens == ["<pad>", "<unk>", "a", "b", "c"]


def test_encode_texts_pads_truncates_and_maps_unknown_words_to_unk():
    vocab = Vocab(["<pad>", "<unk>", "good", "film"])
    ids = encode_texts([["good", "film"], ["bad", "film", "good", "good", "film"]], vocab, max_length=4)
    assert ids.tolist() == [[2, 3, 0, 0], [1, 3, 2, 2]]
    assert encode_texts([["good"]], vocab, max_length=4).shape == (1, 1)


def test_token_batches_trim_each_batch_to_its_longest_text():
    ids = torch.tensor([[2, 0, 0], [2, 3, 3], [3, 0, 0], [2, 2, 0]])
    (x0, y0), (x1, y1) = list(TokenBatches(ids, torch.arange(4), 2))
    assert x0.shape == (2, 3) and x1.shape == (2, 2) and torch.cat([y0, y1]).tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("cell,bidirectional", [("lstm", True), ("gru", False)])
def test_packed_batch_gives_each_text_the_output_it_gets_alone(cell, bidirectional):
    torch.manual_seed(0)
    model = create_model("text_rnn", n_classes=3, n_tokens=20, embed=6, hidden=8, layers=2, cell=cell,
                         bidirectional=bidirectional).eval()
    texts = [[5, 6, 7, 8, 9, 10], [3, 4], [11, 12, 13, 1]]
    batch = torch.zeros(3, 6, dtype=torch.long)
    for row, ids in enumerate(texts):
        batch[row, : len(ids)] = torch.tensor(ids)
    together = model(batch)
    alone = torch.cat([model(torch.tensor([ids])) for ids in texts])
    assert torch.allclose(together, alone, atol=1e-6)


def test_load_text_csv_reads_quoted_commas_and_sorts_classes(reviews):
    data = load_text_csv(reviews, "review", "sentiment")
    assert data.classes == ["neg", "pos"] and len(data.documents) == 400
    assert data.labels[:2].tolist() == [1, 0]
    assert data.documents[0][-3:] == [",", "really", "!"]


@pytest.fixture(scope="module")
def trained(reviews, tmp_path_factory):
    """A run trained through the CLI (10 epochs on 400 generated reviews, about 1 s)."""
    run = tmp_path_factory.mktemp("textcls-run") / "run"
    code, summary = run_cli(["train", "text-classify", "--csv", str(reviews), "--text-column", "review",
                             "--label-column", "sentiment", "--out", str(run), "--epochs", "10", "--batch-size",
                             "32", "--lr", "1e-2", "--device", "cpu", *TINY, "--set", "hidden_size=32",
                             "--set", "plots=true", "--json"])
    assert code == 0, summary
    return run, summary


def test_training_learns_the_sentiment_words_and_writes_the_run(trained):
    run, summary = trained
    assert summary["test_accuracy"] > 0.9            # chance is 0.5
    assert 0.8 < summary["test_macro_f1"] <= 1 and set(summary["per_class"]) == {"neg", "pos"}
    assert summary["rows"] == {"train": 288, "valid": 32, "test": 80}   # stratified 20% test, 10% of the rest
    assert summary["bidirectional"] and summary["vocab_size"] == 2 + len(POSITIVE + NEGATIVE + NOISE) + 4
    for name in ("config.json", "metrics.jsonl", "best.pt", "last.pt", "curves.png", "confusion.png",
                 "summary.json"):
        assert (run / name).is_file()
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 10
    state = torch.load(run / "best.pt", weights_only=True)
    assert state["classes"] == ["neg", "pos"] and state["vocab"][:2] == ["<pad>", "<unk>"]
    assert set(state["vocab"]) == {"<pad>", "<unk>", *POSITIVE, *NEGATIVE, *NOISE, "really", ",", ".", "!"}
    assert state["model_args"]["n_tokens"] == len(state["vocab"])


def test_eval_reproduces_the_test_accuracy(trained):
    run, summary = trained
    code, result = run_cli(["eval", str(run), "--json"])
    assert code == 0 and result["test_accuracy"] == summary["test_accuracy"] == result["summary_test_accuracy"]


def test_cli_predict_ranks_the_classes_of_new_texts(trained, capsys):
    run, _ = trained
    assert main(["predict", str(run), "The music was superb and lovely.", "A dull, boring film!",
                 "--top-k", "2", "--json"]) == 0
    results = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [r["top"][0]["class"] for r in results] == ["pos", "neg"]
    assert len(results[0]["top"]) == 2 and results[0]["top"][0]["probability"] > 0.5
    assert sum(t["probability"] for t in results[1]["top"]) == pytest.approx(1.0, abs=1e-4)
    assert main(["predict", str(run), "zzz unheard-of words"]) == 0      # unknown words are <unk>, not an error
    capsys.readouterr()
    assert main(["predict", str(run), "   "]) == 2
    assert capsys.readouterr().err.strip() == "nnlab: error: no words in '   '"


def test_cli_predict_csv_writes_every_row_with_class_probabilities(trained, tmp_path):
    run, summary = trained
    new = write_reviews(tmp_path / "new.csv", n=60, seed=7)
    code, result = run_cli(["predict", str(run), "--csv", str(new), "--json"])
    assert code == 0, result
    out = tmp_path / "new.predictions.csv"
    assert result["out"] == str(out) and result["rows"] == 60 and result["labelled_rows"] == 60
    assert result["accuracy"] > 0.9 and sum(result["predicted_counts"].values()) == 60
    with open(out, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["id", "review", "sentiment", "predicted_sentiment", "probability_neg", "probability_pos"]
    assert len(rows) == 60
    hits = sum(r["predicted_sentiment"] == r["sentiment"] for r in rows)
    assert hits / 60 == pytest.approx(result["accuracy"])
    assert all(abs(float(r["probability_neg"]) + float(r["probability_pos"]) - 1) < 1e-4 for r in rows)
    texts_only = write_csv(tmp_path / "texts.csv", ["review"], [["A superb film"], ["Dull and boring"]])
    code, result = run_cli(["predict", str(run), "--csv", str(texts_only), "-o", str(tmp_path / "p.csv"), "--json"])
    assert code == 0 and result["rows"] == 2 and "accuracy" not in result
    wrong = write_csv(tmp_path / "wrong.csv", ["text"], [["fine"]])
    code, err = run_cli(["predict", str(run), "--csv", str(wrong)])
    assert code == 2 and f"{wrong}: no column 'review'" in err
    before = texts_only.read_bytes()
    code, err = run_cli(["predict", str(run), "--csv", str(texts_only), "-o", str(texts_only)])
    assert code == 2 and "is the input file" in err and texts_only.read_bytes() == before  # it was overwritten


def test_cli_dry_run_with_a_one_way_gru_and_small_vocabulary(reviews, tmp_path):
    code, summary = run_cli(["train", "text-classify", "--csv", str(reviews), "--text-column", "review",
                             "--label-column", "sentiment", "--out", str(tmp_path / "r"), "--dry-run",
                             "--device", "cpu", "--set", "cell=gru", "--set", "bidirectional=false",
                             "--set", "max_vocab=10", "--set", "balance=sampler", *TINY, "--json"])
    assert code == 0, summary
    assert summary["dry_run"] and not summary["bidirectional"] and summary["vocab_size"] == 10
    assert torch.load(tmp_path / "r" / "best.pt", weights_only=True)["model_args"]["bidirectional"] is False


def bad_csv_error(tmp_path, text, *flags):
    path = tmp_path / "bad.csv"
    path.write_text(text, encoding="utf-8")
    flags = flags or ("--text-column", "review", "--label-column", "sentiment")
    code, err = run_cli(["train", "text-classify", "--csv", str(path), *flags, "--out", str(tmp_path / "r")])
    assert code == 2 and len(err.strip().splitlines()) == 1
    return err


def test_bad_csvs_are_one_line_errors(tmp_path):
    assert "no column 'review'; columns are: text, sentiment" in bad_csv_error(tmp_path, "text,sentiment\nok,pos\n")
    assert "empty CSV" in bad_csv_error(tmp_path, "")
    assert "no data rows" in bad_csv_error(tmp_path, "review,sentiment\n")
    one_class = "review,sentiment\ngood film,pos\nfine film,pos\n"
    assert "label column 'sentiment' has only one class ('pos')" in bad_csv_error(tmp_path, one_class)
    empty_text = "review,sentiment\ngood film,pos\n,neg\nbad film,neg\n"
    assert "line 3: no text in column 'review'" in bad_csv_error(tmp_path, empty_text)
    no_label = "review,sentiment\ngood film,pos\nbad film,\n"
    assert "line 3: no label in column 'sentiment'" in bad_csv_error(tmp_path, no_label)
    assert "needs --label-column" in bad_csv_error(tmp_path, one_class, "--text-column", "review")
    assert "max_vocab must be at least 3" in bad_csv_error(tmp_path, one_class, "--set", "max_vocab=2")


def test_load_text_csv_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        load_text_csv(tmp_path / "nope.csv", "review", "sentiment")


def test_eval_on_a_csv_with_other_classes_is_a_data_error(trained, tmp_path):
    run, _ = trained
    other = write_reviews(tmp_path / "other.csv", n=40)
    other.write_text(other.read_text().replace(",pos", ",good"))
    with pytest.raises(DataError, match=r"classes \['good', 'neg'\] are not the run's \['neg', 'pos'\]"):
        textcls.evaluate(run, data_path=str(other))


def test_vocabulary_comes_from_the_training_rows_only(tmp_path):
    path = tmp_path / "unique.csv"
    path.write_text("text,label\n" + "".join(f"w{i} common,{'ab'[i % 2]}\n" for i in range(40)), encoding="utf-8")
    code, summary = run_cli(["train", "text-classify", "--csv", str(path), "--text-column", "text",
                             "--label-column", "label", "--out", str(tmp_path / "r"), "--dry-run", "--device", "cpu",
                             "--set", "min_freq=1", "--batch-size", "16", *TINY, "--json"])
    assert code == 0, summary
    config = load_config(tmp_path / "r" / "config.json")
    train_rows = textcls.split_rows(load_text_csv(path, "text", "label"), config)["train"].tolist()
    vocab = torch.load(tmp_path / "r" / "best.pt", weights_only=True)["vocab"]
    assert set(vocab) == {"<pad>", "<unk>", "common", *(f"w{i}" for i in train_rows)}
    assert len(train_rows) < 40


def test_interrupted_run_resumes_to_the_uninterrupted_result(reviews, tmp_path):
    args = ["train", "text-classify", "--csv", str(reviews), "--text-column", "review", "--label-column",
            "sentiment", "--epochs", "3", "--batch-size", "32", "--device", "cpu", *TINY, "--json"]
    code, whole = run_cli([*args, "--out", str(tmp_path / "whole")])
    assert code == 0, whole
    code, stopped = run_cli([*args, "--out", str(tmp_path / "cut"), "--set", "stop_after_epochs=1"])
    assert code == 0 and stopped["stopped_after_epochs"] == 1, stopped
    code, resumed = run_cli(["train", "--resume", str(tmp_path / "cut"), "--json"])
    assert code == 0, resumed
    assert_same_run(tmp_path / "cut", tmp_path / "whole", "best.pt")
    assert resumed["test_accuracy"] == whole["test_accuracy"]


def test_resume_without_a_checkpoint_names_the_directory(trained, tmp_path):
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "config.json").write_text((trained[0] / "config.json").read_text())
    code, err = run_cli(["train", "--resume", str(cut)])
    assert code == 2 and f"--resume {cut}: no last.pt" in err


@pytest.mark.parametrize("pooling", ["max", "attention"])
def test_pooled_batch_gives_each_text_the_output_it_gets_alone(pooling):
    torch.manual_seed(0)
    model = create_model("text_rnn", n_classes=3, n_tokens=20, embed=6, hidden=8, pooling=pooling).eval()
    texts = [[5, 6, 7, 8, 9, 10], [3, 4], [11, 12, 13, 1]]
    batch = torch.zeros(3, 6, dtype=torch.long)
    for row, ids in enumerate(texts):
        batch[row, : len(ids)] = torch.tensor(ids)
    alone = torch.cat([model(torch.tensor([ids])) for ids in texts])
    assert torch.allclose(model(batch), alone, atol=1e-6)


def test_attention_weights_sum_to_one_over_real_tokens_and_ignore_padding():
    torch.manual_seed(0)
    model = create_model("text_rnn", n_classes=2, n_tokens=20, embed=6, hidden=8, pooling="attention").eval()
    batch = torch.tensor([[5, 6, 7, 0, 0], [3, 4, 8, 9, 2]])
    weights = model.attention_weights(batch)
    assert weights.shape == (2, 5) and torch.allclose(weights.sum(1), torch.ones(2))
    assert weights[0, 3:].tolist() == [0.0, 0.0] and (weights[0, :3] > 0).all()
    assert torch.allclose(weights[0, :3], model.attention_weights(batch[:1, :3])[0], atol=1e-6)


def test_attention_pooling_run_explains_a_prediction_by_its_sentiment_word(reviews, tmp_path, capsys):
    run = tmp_path / "run"
    code, summary = run_cli(["train", "text-classify", "--csv", str(reviews), "--text-column", "review",
                             "--label-column", "sentiment", "--out", str(run), "--epochs", "10", "--batch-size",
                             "32", "--lr", "1e-2", *TINY, "--set", "hidden_size=32", "--set", "pooling=attention",
                             "--json"])
    assert code == 0, summary
    assert summary["pooling"] == "attention" and summary["test_accuracy"] > 0.9
    strip = tmp_path / "words.png"
    assert main(["predict", str(run), "The plot and the music were superb.", "A dull film.", "--explain",
                 "-o", str(strip), "--json"]) == 0
    results = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    first = results[0]["words"]
    assert [w["word"] for w in first] == ["the", "plot", "and", "the", "music", "were", "superb", "."]
    assert sum(w["weight"] for w in first) == pytest.approx(1.0, abs=1e-3)
    assert max(first, key=lambda w: w["weight"])["word"] == "superb"   # the word that decides the label
    assert max(results[1]["words"], key=lambda w: w["weight"])["word"] == "dull"
    assert strip.stat().st_size > 1000


def test_explain_needs_an_attention_pooling_run(trained, capsys):
    run, _ = trained
    assert main(["predict", str(run), "superb", "--explain"]) == 2
    assert "--set pooling=attention" in capsys.readouterr().err
