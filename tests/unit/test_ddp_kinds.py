"""DDP for every kind that declares it, one clear refusal for every other: ``nnlab train RECIPE --nproc 2``
(gloo, tiny generated data) writes one run directory from rank 0 alone, and the ranks train on
disjoint shares of each epoch; the batchers' shards are checked in-process against one process's batches."""
import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import run_cli, stem_maker, write_square_fashion
from nnlab.data.batches import TensorBatches, shard_rows
from nnlab.data.names import NameBatches
from nnlab.data.text import StreamBatches
from nnlab.errors import ConfigError
from nnlab.kinds import all_kinds, get_kind, takers
from nnlab.recipes import RECIPES


def image_flags(root):
    data = write_square_fashion(root / "fashion-mnist", n_train=200, n_test=50)
    return ["--data", str(data), "--batch-size", "50", "--set", "eval_batch_size=100", "--set", "augment=()",
            "--set", "model_args.widths=(8,16,16)", "--set", "model_args.head_hidden=32"]


def names_flags(root):
    stems = stem_maker(1, 5)  # distinct names, so that a name seen by both ranks is a shared row
    root.mkdir()
    for language, ending in (("Alpha", "ov"), ("Beta", "ini"), ("Gamma", "son")):
        (root / f"{language}.txt").write_text("\n".join(s + ending for s in stems(80)) + "\n", encoding="utf-8")
    return ["--data", str(root), "--batch-size", "32", "--set", "filters=16", "--set", "embed=8"]


def text_flags(root):
    letters = "abcdefghijklmnopqrstuvwxyz \n"  # random text: no two windows of 16 characters alike
    picks = torch.randint(len(letters), (4000,), generator=torch.Generator().manual_seed(0)).tolist()
    root.mkdir()
    (root / "corpus.txt").write_text("".join(letters[i] for i in picks), encoding="utf-8")
    return ["--data", str(root / "corpus.txt"), "--batch-size", "8", "--set", "bptt=16", "--set", "eval_batch_size=4",
            "--set", "hidden_size=16", "--set", "embed=8", "--set", "layers=1"]


# A seconds-long run of every kind that declares ddp: its recipe and the flags of its generated data.
TINY = {"image": ("fashion-cnn", image_flags), "names": ("names-cnn", names_flags), "text": ("shakespeare-lstm", text_flags)}


def test_every_kind_that_declares_ddp_has_a_two_process_run_below():
    assert sorted(TINY) == sorted(takers("ddp"))


def rows_of(batches):
    """Each batch row as bytes (padding zeros dropped): what a rank trained on, comparable across ranks."""
    keys = []
    for x, _ in batches:
        for row in x.flatten(1):
            keys.append(row[row != 0].numpy().tobytes())
    return keys


@pytest.mark.slow  # each: torchrun and two processes importing torch (~15 s of CPU), a second of training
@pytest.mark.parametrize("kind", sorted(TINY))
def test_two_processes_write_one_run_and_train_on_disjoint_shares(kind, tmp_path):
    recipe, flags = TINY[kind]
    out, cwd, trace = tmp_path / "run", tmp_path / "cwd", tmp_path / "trace"
    cwd.mkdir()
    trace.mkdir()
    env = {**os.environ, "NNLAB_TRACE_BATCHES": str(trace / "batches")}
    argv = [sys.executable, "-m", "nnlab", "train", recipe, *flags(tmp_path / "data"), "--epochs", "2",
            "--device", "cpu", "--set", "threads=1", "--set", "plots=false", "--out", str(out), "--nproc", "2",
            "--json"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=cwd, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    printed = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(printed) == 1  # rank 0's summary; the other rank prints nothing
    summary = json.loads(printed[0])
    assert summary["run_dir"] == str(out) and summary["epochs"] == 2
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in metrics] == [1, 2]  # was 2 rows per epoch, one from each rank
    assert len(list(out.glob("events.out.tfevents.*"))) == 1
    assert (out / "summary.json").is_file() and (out / "best.pt").is_file()
    assert not list(cwd.iterdir()) and sorted(p.name for p in tmp_path.iterdir()) == ["cwd", "data", "run", "trace"]

    shares = [torch.load(trace / f"batches-rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert len(shares[0]) == len(shares[1]) > 1  # as many steps on each rank: the all-reduces pair up
    assert [len(x) for x, _ in shares[0]] == [len(x) for x, _ in shares[1]]
    seen = [rows_of(share) for share in shares]
    assert len(set(seen[0])) == len(seen[0]) and len(set(seen[1])) == len(seen[1])  # each row once an epoch
    assert not set(seen[0]) & set(seen[1])  # and on one rank only
    if kind == "names":  # every training name but the odd one out (the global batch split in two)
        assert len(seen[0]) + len(seen[1]) == summary["names"]["train"] // 2 * 2
        assert max(len(x) for x, _ in shares[0]) == 16
    elif kind == "text":  # each window's 8 streams: 4 on each rank
        assert {len(x) for x, _ in shares[0]} == {4}
    else:
        assert {len(x) for x, _ in shares[0]} == {25}


def one_recipe_of_each_kind_without_ddp():
    recipes = {}
    for recipe in RECIPES.values():
        if not get_kind(recipe.kind).supports("ddp"):
            recipes.setdefault(recipe.kind, recipe.name)
    return sorted(recipes.values())


@pytest.mark.parametrize("recipe", one_recipe_of_each_kind_without_ddp())
def test_nproc_is_refused_in_one_line_naming_the_kinds_that_can(recipe, tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", recipe, "--nproc", "2", "--out", str(tmp_path / "r"))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "--nproc" in err and all(name in err for name in takers("ddp"))
    assert not (tmp_path / "r").exists()


def test_a_kind_without_ddp_started_by_torchrun_itself_is_refused_before_joining(monkeypatch, tmp_path):
    from nnlab.kit.run import start_run
    from nnlab.recipes import recipe_config
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    kind = next(k for k in all_kinds() if not k.supports("ddp") and k.name != "custom")
    recipe = next(r.name for r in RECIPES.values() if r.kind == kind.name)
    with pytest.raises(ConfigError, match="cannot be split over processes"):
        start_run(recipe_config(recipe, {}), tmp_path / "r", kind=kind)


def test_shards_are_disjoint_equal_and_together_one_process_s_order():
    order = torch.randperm(11, generator=torch.Generator().manual_seed(0))
    shares = [shard_rows(order, r, 3) for r in range(3)]
    assert [len(s) for s in shares] == [3, 3, 3]
    assert torch.equal(torch.stack(shares, 1).flatten(), order[:9])  # step by step: one process's rows


def test_name_batches_shards_take_one_process_s_batches_between_them():
    names = [stem + "a" * (i % 7) for i, stem in enumerate(stem_maker(2, 4)(50))]  # of 4 to 10 letters
    labels = torch.arange(50) % 3
    whole = NameBatches(names, labels, 10, shuffle=True, generator=torch.Generator().manual_seed(4))
    parts = [NameBatches(names, labels, 10, shuffle=True, generator=torch.Generator().manual_seed(4)).shard(r, 2)
             for r in (0, 1)]
    assert len(parts[0]) == len(parts[1]) == len(whole) == 5 and parts[0].samples == 25
    for (x, y), (x0, y0), (x1, y1) in zip(whole, *parts):
        assert len(y0) == len(y1) == 5
        assert sorted(y.tolist()) == sorted(y0.tolist() + y1.tolist())
        assert {tuple(r[r != 0].tolist()) for r in x} == {tuple(r[r != 0].tolist()) for r in torch.cat(
            [torch.nn.functional.pad(x0, (0, x.shape[1] - x0.shape[1])),
             torch.nn.functional.pad(x1, (0, x.shape[1] - x1.shape[1]))])}
    with pytest.raises(ConfigError, match="--batch-size 10 must divide evenly over 3 processes"):
        whole.shard(0, 3)


def test_stream_batches_shards_are_the_streams_of_one_process_s_windows():
    ids = torch.arange(400)
    whole = StreamBatches(ids, 4, 8, shuffle_offset=True, generator=torch.Generator().manual_seed(1))
    parts = [StreamBatches(ids, 4, 8, shuffle_offset=True, generator=torch.Generator().manual_seed(1)).shard(r, 2)
             for r in (0, 1)]
    assert len(parts[0]) == len(parts[1]) == len(whole)
    for (x, y), (x0, y0), (x1, y1) in zip(whole, *parts):
        assert torch.equal(x[0::2], x0) and torch.equal(x[1::2], x1)  # [2, T] each: streams 0, 2 and 1, 3
        assert torch.equal(y.view(4, -1)[1::2].flatten(), y1)
    with pytest.raises(ConfigError, match="must divide evenly over 3 processes"):
        whole.shard(0, 3)


def test_tensor_batches_shards_keep_the_global_batch():
    images = torch.arange(20, dtype=torch.uint8).view(20, 1, 1, 1)
    batches = TensorBatches(images, torch.arange(20), 4, mean=(0.0,), std=(1.0,), shuffle=True, drop_last=True)
    share = batches.shard(1, 2)
    assert share.batch_size == 2 and share.samples == 10 and len(share) == 5 and batches.batch_size == 4
    assert share.images is batches.images and share.generator is batches.generator
