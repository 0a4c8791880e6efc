# %% [markdown]
# # 8. Translation with attention
#
# An encoder reads the source sentence into one state per token; a decoder writes the
# translation a token at a time and, before each, *attends*: it weighs the encoder's states by how
# relevant each is now (Bahdanau's additive attention). First on a task with a known answer,
# dates in fifteen human formats to ISO 8601; then French to English on real Tatoeba pairs.

# %%
import torch

import nnlab
from nnlab.kinds.translate import attention_figure
from lesson import QUICK, RUNS, dataset, header, quick, show

header("Lesson 8: translation with attention")


def attention(run, sentence: str, beam: int = 1):
    """The attention matrix of ``run``'s translation of ``sentence`` (rows: output tokens, columns: source)."""
    return attention_figure(*run.kind.first_attention(run.model, sentence, run.state, torch.device("cpu"), beam))


# %% [markdown]
# ## Dates
# Characters in, characters out. The recipe trains 90 s on 20,000 generated pairs and gets 99.95%
# of the held-out dates exactly right; quick mode trains 3 epochs on 6,000.

# %%
nnlab.show_batch("translate-dates", 8)

# %%
dates = nnlab.train("translate-dates", out=RUNS / "dates", force=True, tensorboard=False,
                    **quick({"epochs": 3, "pairs": 6000}, {}))
print(dates.headline())
for row in dates.translate(["3rd of March 1999", "March 3, 1999", "1999.03.03", "Wednesday 3 March 1999"]):
    print(f"{row['source']:>24s} -> {row['translation']}")
attention(dates, "3rd of March 1999")

# %% [markdown]
# ## French to English
# The first 5,000 pairs of the PyTorch tutorial's Tatoeba file (`eng-fra-5k`; the full 135,842-pair
# file is `nnlab download eng-fra`), words in and out. The recipe's 15 epochs give 38.6 BLEU greedy,
# 39.7 with a beam of 5 (docs/benchmarks.md); quick mode trains a narrower model for 3 epochs,
# which is barely more than the commonest words.

# %%
_ = dataset("eng-fra-5k")
french = nnlab.train("translate-eng-fra-5k", out=RUNS / "eng-fra", force=True, tensorboard=False, beam=5,
                     **quick({"epochs": 3, "hidden_size": 128}, {}))
print(french.headline())
show(french.show_results(10))

# %% [markdown]
# ## Greedy against beam search
# Greedy decoding takes the likeliest word at each step; a beam keeps the 5 likeliest partial
# translations and picks the best whole one (length-normalised), which fixes some early mistakes.

# %%
sentences = ["je suis content .", "il est tres grand .", "nous sommes en retard .", "elle a faim ."]
for greedy, beam in zip(french.translate(sentences), french.translate(sentences, beam=5)):
    print(f"{greedy['source']:26s} greedy: {greedy['translation']:24s} beam-5: {beam['translation']}")
s = french.summary
print(f"test BLEU: greedy {s['test_bleu']:.1f}, beam-5 {s['test_beam_bleu']:.1f}")
attention(french, "nous sommes en retard .", beam=5)

# %% [markdown]
# ## Checks

# %%
assert dates.summary["test_exact_match"] > quick(0.3, 0.99), dates.summary["test_exact_match"]
assert dates.summary["test_chrf"] > quick(60, 99)
assert s["test_bleu"] > quick(3, 33) and s["test_beam_bleu"] > quick(3, 33), s
if not QUICK:
    assert s["test_beam_bleu"] >= s["test_bleu"]
