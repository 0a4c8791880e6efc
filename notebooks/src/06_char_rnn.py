# %% [markdown]
# # 6. A character-level language model of Shakespeare
#
# Read Tiny Shakespeare (1.1 million characters) one character at a time and predict the next.
# The loss is in nats per character: $\ln 65 \approx 4.17$ for a uniform guess over the 65
# characters, about 3.3 for their frequencies alone; a good LSTM reaches 1.4. Then sample from it,
# colder or hotter, and compare the LSTM with a small transformer.

# %%
import math

import nnlab
from lesson import QUICK, RUNS, header, quick, show, text_or_standin

header("Lesson 6: char-RNN on Tiny Shakespeare")
data = text_or_standin()  # None: the real Tiny Shakespeare, found by the recipes themselves
text_settings = {"data": data} if data else {}

# %% [markdown]
# ## Batches for truncated backpropagation through time
# The text is cut into B long streams, one per batch row, read in windows of T characters; row b
# of window k+1 continues row b of window k, so the LSTM's last state of one window starts the
# next (carried over, and detached so that gradients stop at the window's edge):
#
# ```
# text a b c ... x, B = 4 streams, T = 2:   window 0            window 1
#     stream 0: a b | c d | e f            x = a b  y = b c    x = c d  y = d e
#     stream 1: g h | i j | k l                g h      h i        i j      j k
#     stream 2: m n | o p | q r                m n      n o        o p      p q
#     stream 3: s t | u v | w x                s t      t u        u v      v w
# ```
#
# The first training window of the real data: each row a stream, the target the input one on.

# %%
nnlab.show_batch("shakespeare-lstm", 8, **text_settings)

# %% [markdown]
# ## The LSTM
# The recipe's 2x512 LSTM with locked dropout, trained for 600 s as the README's command does
# (`--time-budget 600`: the one-cycle schedule stretched over the budget); quick mode trains a 1x128
# one on 40% of an epoch.

# %%
lstm = nnlab.train("shakespeare-lstm", out=RUNS / "lstm", force=True, tensorboard=False, **text_settings,
                   **quick({"epochs": 1, "hidden_size": 128, "layers": 1, "limit_train_batches": 0.4}, {"time_budget": 600}))
print(lstm.headline())
lstm.plot_curves()

# %% [markdown]
# ## Samples at three temperatures
# Each character is drawn from softmax(logits / temperature): at 0.3 the model says its likeliest
# things again and again, at 1.0 it samples what it learnt, above that it babbles.

# %%
for temperature in (0.3, 0.8, 1.2):
    text = lstm.sample(prime="ROMEO:", length=quick(150, 300), temperature=temperature, seed=1)["text"]
    print(f"--- temperature {temperature} ---\n{text}\n")

# %% [markdown]
# ## The transformer
# The same data through a small causal transformer (self-attention over the window, no
# recurrence), also for 600 s. At equal time on a CPU the LSTM wins here (docs/benchmarks.md: 1.43
# against 1.55 nats/char in 600 s); quick mode trains a 2-layer, 64-wide one for a tenth of an epoch.

# %%
transformer = nnlab.train("shakespeare-transformer", out=RUNS / "transformer", force=True, tensorboard=False,
                          **text_settings,
                          **quick({"epochs": 1, "hidden_size": 64, "layers": 2, "limit_train_batches": 0.1}, {"time_budget": 600}))
for run in (lstm, transformer):
    print(f"{run.config.model:12s} {run.headline()}")
show(transformer.show_results(12))

# %% [markdown]
# ## Checks

# %%
uniform = math.log(65)
# full mode: 1.43 and 1.55 in 600 s on an idle host (docs/benchmarks.md); a loaded host gets fewer steps
assert lstm.summary["valid_loss"] < quick(2.8, 1.7), lstm.summary["valid_loss"]
assert transformer.summary["valid_loss"] < quick(3.3, 1.9), transformer.summary["valid_loss"]
assert max(lstm.summary["valid_loss"], transformer.summary["valid_loss"]) < uniform
assert lstm.sample(prime="ROMEO:", length=50, seed=1)["text"] == lstm.sample(prime="ROMEO:", length=50, seed=1)["text"]
