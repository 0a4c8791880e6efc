"""Names generated in a chosen language: batches, training, sampling, quality and bad input (generated data)."""
import json
import os

import pytest
import torch

from conftest import stem_maker
from nnlab.cli import main
from nnlab.data.names import BOUNDARY, GenerationBatches, generation_ids
from nnlab.kinds import namegen
from nnlab.recipes import train as train_recipe

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"hidden_size": 32, "embed": 8, "category_embed": 8, "batch_size": 32, "lr": 1e-2, "samples": 100,
        "plots": False}


@pytest.fixture(scope="module")
def names_dir(tmp_path_factory):
    """Two 'languages' a generator can tell apart: Alpha names end in -ov, Beta names in -ini."""
    root = tmp_path_factory.mktemp("gen-names")
    stems = stem_maker(0, 4)

    (root / "Alpha.txt").write_text("\n".join([s + "ov" for s in stems(200)] * 2) + "\n", encoding="utf-8")
    (root / "Beta.txt").write_text("\n".join(s + "ini" for s in stems(200)) + "\n", encoding="utf-8")
    return root


def test_generation_ids_shift_the_name_by_one_letter():
    x, y = generation_ids(torch.tensor([1, 0]), ["ab", "c"], alphabet="abc")
    assert x.tolist() == [[1, BOUNDARY, 2, 3], [0, BOUNDARY, 4, 0]]
    assert y.tolist() == [2, 3, BOUNDARY, 4, BOUNDARY]        # next letter, then the end of each name
    batches = GenerationBatches(["ab", "c", "ba"], torch.tensor([0, 1, 0]), 2, alphabet="abc")
    assert [len(y) for _, y in batches] == [5, 3]


@pytest.fixture(scope="module")
def trained(names_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("gen-run") / "run"
    with open(os.devnull, "w") as quiet:
        summary = train_recipe("names-generate", out=run, overrides={"data": str(names_dir), "epochs": 25, **TINY},
                               stream=quiet)
    return run, summary


@pytest.fixture(scope="module")
def classifier(names_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("gen-cls") / "run"
    overrides = {"data": str(names_dir), "epochs": 6, "filters": 16, "embed": 8, "batch_size": 32}
    with open(os.devnull, "w") as quiet:
        train_recipe("names-cnn", out=run, overrides=overrides, stream=quiet)
    return run


def test_training_deduplicates_and_learns_the_languages(trained):
    run, summary = trained
    assert summary["duplicates_removed"] >= 200                # each Alpha name is written twice
    assert summary["names"]["train"] + summary["names"]["valid"] == 600 - summary["duplicates_removed"]
    assert summary["valid_loss"] < 2.0                        # uniform over 59 tokens would be 4.08 nats
    for name in ("config.json", "metrics.jsonl", "best.pt", "summary.json"):
        assert (run / name).is_file()


def test_sampled_names_follow_the_category_and_the_start_letters(trained):
    run, _ = trained
    alpha = namegen.sample(run, category="Alpha", count=50, seed=0)["names"]
    beta = namegen.sample(run, category="Beta", count=50, seed=0)["names"]
    assert sum(n.endswith("ov") for n in alpha) > 35 and sum(n.endswith("ini") for n in beta) > 35
    started = namegen.sample(run, category="Beta", start="BKZ", seed=3)["names"]
    assert [n[0] for n in started] == ["B", "K", "Z"]
    again = namegen.sample(run, category="Beta", start="BKZ", seed=3)["names"]
    assert started == again


def test_eval_with_a_classifier_measures_language_and_novelty(trained, classifier, names_dir, capsys):
    run, _ = trained
    assert main(["eval", str(run), "--classifier", str(classifier), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result["per_language"]) == {"Alpha", "Beta"}
    assert result["per_language"]["Alpha"]["samples"] == 100
    assert result["in_language_macro"] > 0.7 and 0.0 <= result["novel_macro"] <= 1.0
    assert result["in_language_macro"] == pytest.approx(
        sum(r["in_language"] for r in result["per_language"].values()) / 2)
    assert result["judge_rule"] == "balanced"
    for key in ("judge_recall_on_real_names", "judge_recall_on_real_names_argmax", "in_language_argmax"):
        assert key in result["per_language"]["Beta"]
    assert result["temperature"] == 1.0 and result["top_k"] == 5                        # the recipe's
    assert main(["eval", str(run), "--classifier", str(classifier), "--temperature", "0.3", "--top-k", "3",
                 "--json"]) == 0
    cold = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    hot = namegen.evaluate(run, classifier=str(classifier), temperature=1.5, top_k=100)  # every letter
    assert cold["temperature"] == 0.3 and cold["top_k"] == 3
    assert cold["novel_macro"] <= hot["novel_macro"]                                      # colder: more repeats


def test_the_judge_decides_with_equal_priors_and_its_split_is_the_classifiers_own(classifier):
    judge = namegen.load_judge(classifier)
    summary = json.loads((classifier / "summary.json").read_text())
    # the split made again from the run's config holds the very test names the run was scored on
    assert judge.real_recall["argmax"] == pytest.approx(summary["test_recall"])

    class Fixed(torch.nn.Module):  # every name: Alpha 0.6, Beta 0.4
        def forward(self, ids):
            return torch.tensor([[0.6, 0.4]]).log().expand(len(ids), 2)

    prior = torch.tensor([0.9, 0.1]).log()  # but nine in ten training names were Alpha
    fixed = namegen.Judge(Fixed(), judge.state, prior, {})
    rules = fixed.predict(["Petrov", "Rossini"])
    # 0.6 / 0.9 < 0.4 / 0.1: as likely under equal priors, the name reads as Beta
    assert rules["argmax"].tolist() == [0, 0] and rules["balanced"].tolist() == [1, 1]


def test_cli_sample_prints_one_name_a_line(trained, capsys):
    run, _ = trained
    assert main(["sample", str(run), "--category", "Alpha", "--start", "AB", "--count", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and [n[0] for n in lines] == ["A", "A", "B", "B"]


def test_predict_ranks_the_language_that_generates_the_name(trained):
    run, _ = trained
    results = namegen.predict(run, ["Bkrtov", "Zmpdini"], top_k=2)
    assert [r["top"][0]["class"] for r in results] == ["Alpha", "Beta"]


def test_bad_sample_and_eval_input_is_one_line_exit_2(trained, capsys):
    run, _ = trained
    assert main(["sample", str(run), "--category", "Klingon"]) == 2
    assert "not a language of this run; known: Alpha, Beta" in capsys.readouterr().err
    assert main(["sample", str(run), "--category", "Alpha", "--start", "A9"]) == 2
    assert "--start: '9' not in the run's alphabet" in capsys.readouterr().err
    assert main(["sample", str(run)]) == 2
    assert "--category: give a language" in capsys.readouterr().err
    assert main(["eval", str(run), "--ensemble", "snapshots"]) == 2
    assert "--ensemble does not apply" in capsys.readouterr().err
    assert main(["eval", str(run), "--classifier", str(run)]) == 2
    assert "not a names run" in capsys.readouterr().err


def test_category_flags_do_not_apply_to_a_char_rnn(tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text("abcabcabd " * 400)
    run = tmp_path / "lm"
    assert main(["train", "shakespeare-lstm", "--data", str(text), "--out", str(run), "--dry-run",
                 "--set", "hidden_size=16", "--set", "layers=1", "--set", "bptt=8", "--batch-size", "4", "--set", "eval_batch_size=4"]) == 0
    capsys.readouterr()
    assert main(["sample", str(run), "--category", "Alpha"]) == 2
    assert "--category does not apply" in capsys.readouterr().err


@pytest.mark.parametrize("condition", ["state", "both"])
def test_the_language_as_initial_state_conditions_the_first_letter(condition):
    from nnlab.models import create_model
    torch.manual_seed(0)
    model = create_model("name_generator", n_classes=10, n_categories=2, embed=4, category_embed=4, hidden=8,
                         condition=condition).eval()
    x = torch.tensor([[0, BOUNDARY], [1, BOUNDARY]])
    logits, state = model.forward_sequence(x)
    assert not torch.allclose(logits[0], logits[1])           # the language alone changes the first letter
    again, _ = model.forward_sequence(x, model.initial_state(x[:, 0]))
    assert torch.allclose(logits, again)                      # no state given: the language's initial state
    if condition == "state":
        assert model.rnn.input_size == 4                      # the letters alone are the input


def test_condition_and_eval_top_k_are_checked(names_dir, tmp_path, capsys):
    for key, value, message in (("condition", "prefix", "condition: expected input or state or both"),
                                ("eval_top_k", "0", "eval_top_k must be at least 1")):
        assert main(["train", "names-generate", "--data", str(names_dir), "--out", str(tmp_path / "r"),
                     "--set", f"{key}={value}"]) == 2
        assert message in capsys.readouterr().err
