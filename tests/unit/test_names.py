"""Surname -> language: folding, padded/packed batches, balancing, training, predict and bad input (generated data)."""
import json
import os

import pytest
import torch

from conftest import assert_same_run, metric_rows, stem_maker
from nnlab.cli import main
from nnlab.data.names import (NameBatches, ceiling, deduplicate, encode_names, fold_ascii, grouped_split,
                              load_names, random_split)
from nnlab.errors import DataError
from nnlab.models import create_model
from nnlab.kinds import names as names_task
from nnlab.kinds.sequence import class_weights
from nnlab.recipes import train as train_recipe

TINY = ["--set", "hidden_size=24", "--set", "embed=12", "--set", "threads=1"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def names_dir(tmp_path_factory):
    """Three 'languages' whose names a model can tell apart by their endings; one is rare (imbalance)."""
    root = tmp_path_factory.mktemp("names")
    stems = stem_maker(0, 4)

    (root / "Alpha.txt").write_text("\n".join(s + "ov" for s in stems(300)) + "\n", encoding="utf-8")
    (root / "Beta.txt").write_text("\n".join(s + "ini" for s in stems(300)) + "\n\n", encoding="utf-8")
    (root / "Gamma.txt").write_text("\n".join(s + "ez" for s in stems(60)) + "\nŚlusàrski\n", encoding="utf-8")
    return root


def test_fold_ascii_drops_accents_and_foreign_symbols():
    assert fold_ascii("Ślusàrski") == "Slusarski"
    assert fold_ascii("O'Néill") == "O'Neill"
    assert fold_ascii("李") == ""


def test_encode_names_pads_with_zeros():
    ids = encode_names(["ab", "abcd"])
    assert ids.shape == (2, 4)
    assert ids[0, 2:].tolist() == [0, 0] and (ids[1] > 0).all()


def test_load_names_reads_classes_in_sorted_order(names_dir):
    data = load_names(names_dir)
    assert data.classes == ["Alpha", "Beta", "Gamma"]
    assert len(data.names) == 661 and "Slusarski" in data.names       # empty lines skipped, accents folded
    assert torch.bincount(data.labels).tolist() == [300, 300, 61]


def test_batches_are_trimmed_to_their_longest_name_and_cover_every_name():
    names = ["Li", "Nakamura", "Ng", "Abe"]
    batches = NameBatches(names, torch.arange(4), 2)
    (x0, y0), (x1, y1) = list(batches)
    assert x0.shape == (2, 8) and x1.shape == (2, 3)
    assert torch.cat([y0, y1]).tolist() == [0, 1, 2, 3]


def test_balanced_sampler_draws_rare_classes_as_often_as_common_ones():
    labels = torch.tensor([0] * 90 + [1] * 10)
    weights = class_weights(labels, 2)
    assert weights[1] / weights[0] == pytest.approx(9.0)
    batches = NameBatches(["ab"] * 100, labels, 1000, sample_weights=weights[labels],
                          generator=torch.Generator().manual_seed(0))
    drawn = torch.cat([y for _, y in batches])
    share = drawn.float().mean().item()
    assert 0.35 < share < 0.65   # about half, against 10% in the data


def test_packed_model_ignores_padding():
    torch.manual_seed(0)
    model = create_model("name_rnn", n_classes=3, n_tokens=10, embed=4, hidden=8).eval()
    short = torch.tensor([[3, 4, 5]])
    padded = torch.tensor([[3, 4, 5, 0, 0, 0]])
    assert torch.allclose(model(short), model(padded), atol=1e-6)


@pytest.fixture(scope="module")
def trained(names_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("names-run") / "run"
    overrides = {"data": str(names_dir), "epochs": 6, "hidden_size": 24, "embed": 12, "batch_size": 32,
                 "lr": 1e-2, "balance": "weighted-loss"}
    with open(os.devnull, "w") as quiet:
        summary = train_recipe("names-rnn", out=run, overrides=overrides, stream=quiet)
    return run, summary


def test_training_writes_the_run_and_learns_the_endings(trained):
    run, summary = trained
    assert summary["test_accuracy"] > 0.9
    assert 0 < summary["test_macro_f1"] <= 1 and set(summary["per_class"]) == {"Alpha", "Beta", "Gamma"}
    assert 60 <= summary["names"]["test"] <= 70 and summary["balance"] == "weighted-loss"
    assert summary["protocol"] == "grouped" and summary["test_pairs_in_train"] == 0.0
    assert summary["ceiling"] == 1.0 and 0.4 < summary["majority_baseline"] < 0.6
    assert set(summary["test_recall"]) == {"Alpha", "Beta", "Gamma"}
    for name in ("config.json", "metrics.jsonl", "best.pt", "curves.png", "confusion.png", "summary.json"):
        assert (run / name).is_file()
    state = torch.load(run / "best.pt", weights_only=True)
    assert isinstance(state["alphabet"], str) and state["classes"] == ["Alpha", "Beta", "Gamma"]


def test_eval_reproduces_the_test_accuracy(trained, names_dir):
    run, summary = trained
    result = names_task.evaluate(run)
    assert result["test_accuracy"] == summary["test_accuracy"] == result["summary_test_accuracy"]


def test_cli_predict_takes_names(trained, capsys):
    run, _ = trained
    assert main(["predict", str(run), "Brokov", "Tamini", "--top-k", "2", "--json"]) == 0
    results = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [r["top"][0]["class"] for r in results] == ["Alpha", "Beta"]
    assert len(results[0]["top"]) == 2 and results[0]["top"][0]["probability"] > 0.5
    assert main(["predict", str(run), "李"]) == 2
    assert "no letters the model knows" in capsys.readouterr().err


def test_cli_dry_run_with_sampler(names_dir, tmp_path, capsys):
    assert main(["train", "names-rnn", "--data", str(names_dir), "--out", str(tmp_path / "r"), "--dry-run",
                 "--set", "balance=sampler", *TINY, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["dry_run"] and summary["balance"] == "sampler" and len(summary["classes"]) == 3


def test_bad_names_folders_are_one_line_errors(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["train", "names-rnn", "--data", str(empty), "--out", str(tmp_path / "r")]) == 2
    assert "no .txt files" in capsys.readouterr().err
    (empty / "Alpha.txt").write_text("Smith\n")
    (empty / "Beta.txt").write_text("\n\n")
    with pytest.raises(DataError, match="Beta.txt: class 'Beta' has no names"):
        load_names(empty)
    assert main(["train", "names-rnn", "--data", str(tmp_path / "missing")]) == 2
    assert "no such directory" in capsys.readouterr().err
    assert main(["train", "names-rnn", "--data", str(empty), "--set", "balance=maybe"]) == 2
    assert "balance" in capsys.readouterr().err


def test_interrupted_run_resumes_to_the_uninterrupted_result(names_dir, tmp_path, capsys):
    """Stopped after 2 of 4 epochs (dropout on, sampler drawing), then resumed through the CLI: the
    metrics, the final weights and the test accuracy are those of the run that was never stopped."""
    overrides = {"data": str(names_dir), "epochs": 4, "hidden_size": 16, "embed": 8, "batch_size": 64,
                 "dropout": 0.3, "balance": "sampler", "plots": False}
    with open(os.devnull, "w") as quiet:
        whole = train_recipe("names-rnn", out=tmp_path / "whole", overrides=overrides, stream=quiet)
        cut = tmp_path / "cut"
        stopped = train_recipe("names-rnn", out=cut, overrides={**overrides, "stop_after_epochs": 2},
                                   stream=quiet)
    assert stopped["stopped_after_epochs"] == 2 and not (cut / "summary.json").exists()
    assert main(["train", "--resume", str(cut), "--json"]) == 0
    resumed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert_same_run(cut, tmp_path / "whole")
    assert len(metric_rows(cut)) == 4
    assert resumed["test_accuracy"] == whole["test_accuracy"] and resumed["epochs"] == 4
    assert main(["train", "--resume", str(cut)]) == 2
    assert "already finished" in capsys.readouterr().err


def test_character_cnn_ignores_padding_and_trains_through_the_cli(names_dir, tmp_path, capsys):
    model = create_model("name_cnn", n_classes=3, n_tokens=60, embed=8, filters=6, widths=(2, 3), dropout=0.0).eval()
    alone = model(encode_names(["Abc"]))
    padded = model(encode_names(["Abc", "Abcdefghij"]))[:1]   # the same name in a wider batch
    assert torch.allclose(alone, padded, atol=1e-6)
    run = tmp_path / "cnn"
    assert main(["train", "names-cnn", "--data", str(names_dir), "--out", str(run), "--epochs", "8",
                 "--batch-size", "32", "--set", "filters=16", "--set", "embed=8", "--set", "widths=2,3", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["model"] == "name_cnn" and summary["test_accuracy"] > 0.9
    # Names the run never saw, each with its language's ending (-ov Alpha, -ini Beta, -ez Gamma, the rare one).
    assert main(["predict", str(run), "Petrov", "Bellini", "Lopez", "--json"]) == 0
    predicted = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [p["top"][0]["class"] for p in predicted] == ["Alpha", "Beta", "Gamma"]
    assert main(["train", "names-cnn", "--data", str(names_dir), "--set", "model=tcn"]) == 2
    assert "model: expected rnn or cnn" in capsys.readouterr().err


def test_character_cnn_as_one_matrix_product_equals_its_convolutions():
    # The model runs its widths' kernels as one product over each position's window; the
    # reference here is what it stands for: each nn.Conv1d, ReLU, the max over the real letters.
    torch.manual_seed(0)
    model = create_model("name_cnn", n_classes=4, n_tokens=60, embed=6, filters=5, widths=(1, 2, 5), dropout=0.0)
    ids = encode_names(["Abc", "Li", "Abcdefghij", "X"])
    features = model.forward_features(ids)
    embedded = model.embed(ids).transpose(1, 2)
    reference = []
    for conv in model.convs:
        maps = torch.relu(conv(embedded))[:, :, :ids.shape[1]]
        reference.append(torch.stack([maps[i, :, :int((row != 0).sum())].amax(1) for i, row in enumerate(ids)]))
    reference = torch.cat(reference, 1)
    assert torch.allclose(features, reference, atol=1e-6)
    trained = [*model.embed.parameters(), *model.convs.parameters()]  # the head is after the features
    features.sum().backward()
    grads = [p.grad.clone() for p in trained]
    model.zero_grad()
    reference.sum().backward()
    assert all(torch.allclose(a, p.grad, atol=1e-6) for a, p in zip(grads, trained))


def test_attention_pooling_trains_and_weighs_only_the_real_letters(names_dir, tmp_path, capsys):
    run = tmp_path / "att"
    assert main(["train", "names-rnn", "--data", str(names_dir), "--out", str(run), "--epochs", "6",
                 "--batch-size", "32", "--set", "hidden_size=16", "--set", "embed=8", "--set", "pooling=attention",
                 "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["test_accuracy"] > 0.8
    _, model, _ = names_task.load_run(run)
    ids = encode_names(["Petrov", "Li"])                      # [2, 6]: "Li" padded with 4 zeros
    weights = model.attention_weights(ids)
    assert torch.allclose(weights.sum(1), torch.ones(2), atol=1e-5)
    assert torch.all(weights[1, 2:] == 0)                      # no weight on padding
    assert main(["train", "names-rnn", "--data", str(names_dir), "--set", "pooling=mean"]) == 2
    assert "pooling: expected last or max or attention" in capsys.readouterr().err


@pytest.fixture(scope="module")
def repeated_dir(tmp_path_factory):
    """Names repeated within a language (as the tutorial's Arabic.txt) and names in two languages."""
    root = tmp_path_factory.mktemp("repeated")
    stems = stem_maker(1, 5)

    alpha = [s + "ov" for s in stems(150)]
    beta = [s + "ini" for s in stems(150)]
    shared = ["Smith", "Brown", "Lee", "Kim"]                      # in both languages
    (root / "Alpha.txt").write_text("\n".join(alpha * 3 + shared) + "\n", encoding="utf-8")   # each name 3 times
    (root / "Beta.txt").write_text("\n".join(beta + shared + shared) + "\n", encoding="utf-8")
    return root


def test_deduplication_keeps_each_pair_once_and_counts_the_rest(repeated_dir):
    data = load_names(repeated_dir)
    unique, removed = deduplicate(data)
    assert len(data.names) == 450 + 4 + 150 + 8
    assert removed == 300 + 4 and len(unique.names) == 150 + 4 + 150 + 4
    assert len(set(zip(unique.names, unique.labels.tolist()))) == len(unique.names)
    assert ceiling(unique.names, unique.labels) == pytest.approx((308 - 4) / 308)


def test_grouped_split_puts_no_name_string_in_two_splits(repeated_dir):
    unique, _ = deduplicate(load_names(repeated_dir))
    rows = grouped_split(unique.names, unique.labels, 0.1, 0.2, torch.Generator().manual_seed(0))
    assert sorted(torch.cat(list(rows.values())).tolist()) == list(range(len(unique.names)))
    strings = {k: {unique.names[i] for i in v.tolist()} for k, v in rows.items()}
    assert not strings["train"] & strings["test"] and not strings["train"] & strings["valid"]
    assert not strings["valid"] & strings["test"]
    test_labels = torch.bincount(unique.labels[rows["test"]], minlength=2).tolist()
    assert all(25 <= n <= 36 for n in test_labels)                 # stratified: ~20% of each language
    again = grouped_split(unique.names, unique.labels, 0.1, 0.2, torch.Generator().manual_seed(0))
    assert all(torch.equal(rows[k], again[k]) for k in rows)


def test_tutorial_split_is_random_over_every_line_and_leaks(repeated_dir):
    data = load_names(repeated_dir)
    rows = random_split(len(data.names), 0.1, 0.15, torch.Generator().manual_seed(0))
    assert len(rows["test"]) == round(0.15 * len(data.names))
    config = names_task.NamesConfig(protocol="tutorial")
    split = names_task.split_names(data, config)
    assert split.about["duplicates_removed"] == 0 and "leaks" in split.about["split"]
    assert split.about["test_pairs_in_train"] > 0.3               # a name seen 3 times is mostly also in train
    grouped = names_task.split_names(data, names_task.NamesConfig())
    assert grouped.about["duplicates_removed"] == 304
    assert grouped.about["test_pairs_in_train"] == grouped.about["test_names_in_train"] == 0.0


def test_protocol_is_set_from_the_cli_and_reported(repeated_dir, tmp_path, capsys):
    assert main(["train", "names-cnn", "--data", str(repeated_dir), "--out", str(tmp_path / "t"), "--dry-run",
                 "--set", "protocol=tutorial", "--set", "filters=8", "--set", "embed=8", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["protocol"] == "tutorial" and summary["names"]["test"] == round(0.15 * 612)
    assert main(["train", "names-cnn", "--data", str(repeated_dir), "--set", "protocol=leaky"]) == 2
    assert "protocol: expected grouped or tutorial" in capsys.readouterr().err


def test_a_folder_of_one_repeated_name_is_one_line_error(tmp_path, capsys):
    (tmp_path / "Alpha.txt").write_text("Smith\n" * 50)
    (tmp_path / "Beta.txt").write_text("Smith\n" * 50)
    assert main(["train", "names-cnn", "--data", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "1 distinct names (after removing 98 duplicate lines) are too few" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_ngram_bag_ignores_padding_and_hashes_each_ngram_alike():
    from nnlab.models.names import ngram_ids
    ids, mask = ngram_ids(encode_names(["Abc", "Abcdefgh"]), orders=3, buckets=1000)
    first = sorted(ids[0][mask[0]].tolist())
    alone, alone_mask = ngram_ids(encode_names(["Abc"]), orders=3, buckets=1000)
    assert first == sorted(alone[0][alone_mask[0]].tolist())
    assert len(first) == 5 + 4 + 3       # "^Abc$": 5 unigrams (marks included), 4 bigrams, 3 trigrams
    model = create_model("name_ngrams", n_classes=3, orders=3, buckets=1000, embed=8, dropout=0.0).eval()
    assert torch.allclose(model(encode_names(["Abc"])), model(encode_names(["Abc", "Abcdefgh"]))[:1], atol=1e-6)


def test_ensemble_predicts_by_the_members_mean_log_probability_and_trains_each_on_its_own_loss():
    from nnlab.models.names import MemberLoss, MembersInTraining, ensemble_correct
    torch.manual_seed(0)
    model = create_model("name_ensemble", n_classes=3, n_tokens=60, members=["cnn", "rnn", "ngrams"], embed=8,
                         filters=6, widths=[2, 3], hidden=8, buckets=512, dropout=0.0).eval()
    x, y = encode_names(["Abc", "Defgh", "Ij"]), torch.tensor([0, 1, 2])
    members = [member(x) for member in model.members]
    expected = torch.stack([m.log_softmax(1) for m in members]).mean(0)
    assert torch.allclose(model(x), expected, atol=1e-6)
    wrapper = MembersInTraining(model)
    assert wrapper.eval()(x).shape == (3, 3) and wrapper.train()(x).shape == (3, 3, 3)
    stacked = torch.stack(members)
    ce = torch.nn.functional.cross_entropy
    assert MemberLoss()(stacked, y).item() == pytest.approx(sum(ce(m, y).item() for m in members) / 3, rel=1e-5)
    assert ensemble_correct(stacked, y) == ensemble_correct(expected, y) == (expected.argmax(1) == y).sum()


def test_ensemble_trains_through_the_cli_and_evaluates_to_its_summary(names_dir, tmp_path, capsys):
    run = tmp_path / "ens"
    assert main(["train", "names-cnn", "--data", str(names_dir), "--out", str(run), "--epochs", "4",
                 "--batch-size", "32", "--set", "model=ensemble", "--set", "members=cnn,ngrams", "--set", "filters=16",
                 "--set", "embed=8", "--set", "buckets=4096", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["model"] == "name_ensemble" and summary["test_accuracy"] > 0.9
    assert names_task.evaluate(run)["test_accuracy"] == summary["test_accuracy"]
    top = names_task.predict(run, ["Petrov"], top_k=3)[0]["top"]
    assert sum(t["probability"] for t in top) == pytest.approx(1.0, abs=1e-4)
    assert main(["train", "names-cnn", "--data", str(names_dir), "--set", "model=ensemble",
                 "--set", "members=cnn,svm"]) == 2
    assert "members: expected cnn or rnn or ngrams" in capsys.readouterr().err
