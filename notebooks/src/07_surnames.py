# %% [markdown]
# # 7. Surnames: which language is a name from, and new names in a language
#
# The PyTorch tutorial's 20,000 surnames in 18 languages. Two lessons in one: measure honestly
# (the files repeat names, and a name seen in training is no test), and see that a character CNN
# beats the tutorial's RNN in a fraction of the time. Then turn the task around and generate names
# in a chosen language, judged by the classifier.

# %%
import random

import torch

import nnlab
from nnlab.data.names import load_names
from nnlab.kinds.names import split_names
from nnlab.lessons import tutorials
from lesson import QUICK, RUNS, dataset, header, quick, show

header("Lesson 7: surnames")
found = dataset("names")
assert found, "the surnames are absent: `nnlab download names` (the tutorial's data.zip), or NNLAB_DATA=DIR"

# %% [markdown]
# ## A split without leaks
# Arabic.txt holds 2,000 lines but only 108 distinct names: a random split puts most test names in
# the training set too, and measures memory. nnlab keeps each (name, language) pair once and puts
# every name string in one split only. The summary says what that did.

# %%
cnn = nnlab.train("names-cnn", out=RUNS / "names-cnn", force=True, tensorboard=False, **quick({"epochs": 2}, {}))
s = cnn.summary
print(cnn.headline())
print(f"split: {s['split']}\nduplicates removed: {s['duplicates_removed']}, test names also in training: "
      f"{s['test_names_in_train']}; majority class alone: {s['majority_baseline']:.3f}; ceiling (names in several "
      f"languages): {s['ceiling']:.3f}; macro-F1 {s['test_macro_f1']:.3f}")
show(cnn.plot_confusion(), cnn.show_results(12))

# %% [markdown]
# ## The tutorial's RNN on the same split
# "Classifying Names with a Character-Level RNN": one-hot letters, an `nn.RNN` of 128 run a name at
# a time, SGD at 0.15. Same training and test names as the CNN above; quick mode trains it on
# 2,000 names for one epoch, full mode for as long as the CNN recipe's 12 epochs take it.

# %%
split = split_names(load_names(cnn.config.data), cnn.config)
train_rows, test_rows = split.rows["train"].tolist(), split.rows["test"].tolist()
if QUICK:
    train_rows = random.Random(0).sample(train_rows, 2000)
torch.manual_seed(0)
rnn = tutorials.TutorialRNN(len(tutorials.TUTORIAL_LETTERS), 128, len(split.data.classes))
optimizer = torch.optim.SGD(rnn.parameters(), lr=0.15)
tensors = [tutorials.line_to_tensor(split.data.names[i]) for i in train_rows]
targets = [torch.tensor([int(split.data.labels[i])]) for i in train_rows]
test_names = [split.data.names[i] for i in test_rows]
for epoch in range(quick(1, 12)):
    tutorials.names_train_epoch(rnn, tensors, targets, optimizer, random.Random(epoch))
tutorial_accuracy = (tutorials.names_predict(rnn, test_names).argmax(1) == split.data.labels[split.rows["test"]]).float().mean().item()
print(f"tutorial RNN: test accuracy {tutorial_accuracy:.4f}   names-cnn: {cnn.summary['test_accuracy']:.4f}")

# %% [markdown]
# ## Names in a chosen language
# `names-generate` is a character LSTM told the language at every step; it writes a name letter by
# letter until its end mark. The classifier above judges the language of 100 drawn names per
# language (with equal priors, so that Russian's 47% of the training names count for nothing), and
# we count the names found in no data file (novel).

# %%
generator = nnlab.train("names-generate", out=RUNS / "names-generate", force=True, tensorboard=False,
                        **quick({"epochs": 1, "hidden_size": 64, "samples": 100}, {}))
for language in ("Russian", "Japanese", "Italian"):
    print(f"{language:9s}", ", ".join(generator.sample(category=language, count=6, seed=1)["names"]))
judged = generator.evaluate(classifier=str(cnn.run_dir))
print(f"in the asked language (the classifier's judgement): {judged['in_language_macro']:.2f} (chance: 1/18 = 0.06); "
      f"novel: {judged['novel_macro']:.2f}")

# %% [markdown]
# ## Checks

# %%
assert s["test_names_in_train"] == 0 and s["test_pairs_in_train"] == 0
assert cnn.summary["test_accuracy"] > quick(0.78, 0.83), cnn.summary["test_accuracy"]
assert cnn.summary["test_accuracy"] > s["majority_baseline"] + 0.2
assert tutorial_accuracy > s["majority_baseline"] - 0.05
if not QUICK:
    assert cnn.summary["test_accuracy"] > tutorial_accuracy
chance = 1 / len(split.data.classes)  # a judge picking a language at random
assert judged["in_language_macro"] > quick(2 * chance, 0.5) and judged["novel_macro"] > 0.5
