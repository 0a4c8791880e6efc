"""Each Tiny Shakespeare language-model recipe trains a few windows of the real text (a dry run: the
same steps however loaded the machine is) and samples."""
import math
import os

import pytest

from conftest import real_dataset
from nnlab.data.text import SHAKESPEARE
from nnlab.kinds import charlm
from nnlab.recipes import train

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def shakespeare():
    """The Tiny Shakespeare file (``$NNLAB_DATA/text`` or the cache), never downloaded."""
    return real_dataset("text") / SHAKESPEARE.files[0].name


@pytest.mark.parametrize("recipe", ["shakespeare-lstm", "shakespeare-transformer", "shakespeare-words"])
def test_recipe_trains_briefly_on_tiny_shakespeare_and_samples(shakespeare, recipe, tmp_path):
    with open(os.devnull, "w") as quiet:
        summary = train(recipe, out=tmp_path / "run", stream=quiet, dry_run=True, overrides={"data": str(shakespeare)})
    uniform = math.log(summary["vocab_size"])
    assert summary["valid_loss"] < uniform, summary["valid_loss"]           # it learnt something in 4 steps
    words = summary["tokens"] == "word"
    if words:
        assert summary["vocab_size"] == 10000 and 0 < summary["valid_unk_share"] < 0.05
        assert summary["test_perplexity"] == pytest.approx(math.exp(summary["test_loss"]))
    result = charlm.sample(tmp_path / "run", prime="ROMEO:", length=20, seed=1)
    assert result["text"].startswith("ROMEO:") and len(result["words"] if words else result["text"]) in (20, 26)
