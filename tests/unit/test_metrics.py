import json

import pytest
import torch

from nnlab.engine.metrics import accuracy, confusion_matrix, most_confused, per_class_report, topk_accuracy

CLASSES = ["cat", "dog", "owl"]
# 8 samples, hand-checked: true cat x3, dog x3, owl x2.
TARGETS = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2])
PREDS = torch.tensor([0, 0, 1, 1, 1, 0, 1, 2])


def test_accuracy_takes_logits_or_predicted_indices():
    logits = torch.tensor([[2.0, 1.0], [0.1, 0.9], [3.0, -1.0], [0.0, 1.0]])
    targets = torch.tensor([0, 1, 1, 1])
    assert accuracy(logits, targets) == pytest.approx(0.75)
    assert accuracy(torch.tensor([0, 1, 0, 1]), targets) == pytest.approx(0.75)


def test_accuracy_of_empty_batch_is_zero_not_nan():
    assert accuracy(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)) == 0.0


def test_topk_accuracy_counts_target_among_k_highest():
    logits = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1]])
    targets = torch.tensor([1, 0, 2])
    assert topk_accuracy(logits, targets, 1) == pytest.approx(0.0)
    assert topk_accuracy(logits, targets, 2) == pytest.approx(1 / 3)
    assert topk_accuracy(logits, targets, 3) == pytest.approx(1.0)


def test_topk_accuracy_with_k_above_class_count_counts_every_sample():
    assert topk_accuracy(torch.randn(4, 3), torch.tensor([0, 1, 2, 0]), 5) == 1.0


def test_confusion_matrix_rows_are_true_class_columns_predicted():
    cm = confusion_matrix(PREDS, TARGETS, 3)
    assert cm.dtype == torch.int64
    assert cm.tolist() == [[2, 1, 0], [1, 2, 0], [0, 1, 1]]


def test_confusion_matrix_matches_a_loop_over_samples():
    generator = torch.Generator().manual_seed(0)
    targets = torch.randint(0, 7, (500,), generator=generator)
    preds = torch.randint(0, 7, (500,), generator=generator)
    expected = torch.zeros(7, 7, dtype=torch.int64)
    for t, p in zip(targets.tolist(), preds.tolist()):
        expected[t, p] += 1
    assert torch.equal(confusion_matrix(preds, targets, 7), expected)


def test_confusion_matrix_rejects_indices_outside_the_classes():
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(torch.tensor([0, 3]), torch.tensor([0, 1]), 3)


def test_per_class_report_matches_hand_computed_values():
    report = per_class_report(confusion_matrix(PREDS, TARGETS, 3), CLASSES)
    cat, dog, owl = (report["per_class"][name] for name in CLASSES)
    assert (cat["precision"], cat["recall"], cat["support"]) == (pytest.approx(2 / 3), pytest.approx(2 / 3), 3)
    assert dog["precision"] == pytest.approx(2 / 4) and dog["recall"] == pytest.approx(2 / 3)
    assert dog["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert (owl["precision"], owl["recall"], owl["support"]) == (pytest.approx(1.0), pytest.approx(0.5), 2)
    assert report["macro"]["recall"] == pytest.approx((2 / 3 + 2 / 3 + 0.5) / 3)
    assert report["weighted"]["recall"] == pytest.approx(5 / 8)  # weighted recall equals accuracy
    assert report["accuracy"] == pytest.approx(5 / 8)


def test_per_class_report_zero_division_gives_finite_zeros_and_valid_json():
    # "owl" never appears and is never predicted; "dog" is never predicted.
    cm = confusion_matrix(torch.tensor([0, 0, 0]), torch.tensor([0, 1, 1]), 3)
    report = per_class_report(cm, CLASSES)
    assert report["per_class"]["owl"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert report["per_class"]["dog"]["precision"] == 0.0
    json.dumps(report, allow_nan=False)
    empty = per_class_report(torch.zeros(3, 3, dtype=torch.int64), CLASSES)
    assert empty["accuracy"] == 0.0 and empty["weighted"]["f1"] == 0.0
    json.dumps(empty, allow_nan=False)


def test_per_class_report_rejects_class_names_of_wrong_length():
    with pytest.raises(ValueError, match="2 classes"):
        per_class_report(torch.zeros(3, 3, dtype=torch.int64), ["a", "b"])


def test_most_confused_lists_off_diagonal_pairs_largest_first_without_zeros():
    cm = torch.tensor([[50, 4, 0], [7, 40, 1], [0, 4, 30]])
    assert most_confused(cm, CLASSES, k=5) == [("dog", "cat", 7), ("cat", "dog", 4), ("owl", "dog", 4),
                                               ("dog", "owl", 1)]
    assert most_confused(cm, CLASSES, k=1) == [("dog", "cat", 7)]
    assert most_confused(torch.eye(3, dtype=torch.int64), CLASSES) == []


def test_report_and_confusion_agree_with_scikit_learn():
    from sklearn import metrics  # a dependency: a plain import, never a skip
    generator = torch.Generator().manual_seed(1)
    targets = torch.randint(0, 5, (300,), generator=generator)
    preds = torch.where(torch.rand(300, generator=generator) < 0.6, targets,
                        torch.randint(0, 4, (300,), generator=generator))  # class 4 never predicted
    names = [str(i) for i in range(5)]
    cm = confusion_matrix(preds, targets, 5)
    assert cm.tolist() == metrics.confusion_matrix(targets, preds, labels=range(5)).tolist()
    ours = per_class_report(cm, names)
    theirs = metrics.classification_report(targets, preds, labels=range(5), target_names=names,
                                           output_dict=True, zero_division=0)
    for name in names:
        for key in ("precision", "recall", "f1"):
            assert ours["per_class"][name][key] == pytest.approx(theirs[name][key if key != "f1" else "f1-score"])
    for ours_key, theirs_key in (("macro", "macro avg"), ("weighted", "weighted avg")):
        assert ours[ours_key]["f1"] == pytest.approx(theirs[theirs_key]["f1-score"])
        assert ours[ours_key]["precision"] == pytest.approx(theirs[theirs_key]["precision"])
    logits = torch.randn(300, 5, generator=generator)
    assert topk_accuracy(logits, targets, 2) == pytest.approx(
        metrics.top_k_accuracy_score(targets, logits, k=2, labels=range(5)))
