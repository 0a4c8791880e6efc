"""Nothing lost, nothing mixed: the run kit's checkpoint pair, its lock, its start, and the settings it refuses."""
from __future__ import annotations

import io
import os

import pytest
import torch

import nnlab
from nnlab.errors import CheckpointError, ConfigError
from nnlab.kit.rundir import RunLock
from conftest import assert_same_run, run_cli
from test_kit import Blobs, TwoLayer, fresh_model

SETTINGS = {"epochs": 4, "lr": 1e-2, "batch_size": 32, "plots": False}


def fit(out, **extra):
    return nnlab.fit(extra.pop("model", None) or fresh_model(), Blobs(300, 0), Blobs(100, 1), out=out,
                     stream=io.StringIO(), **{**SETTINGS, **extra})


def test_a_kill_between_the_best_and_last_checkpoints_resumes_to_the_same_result(tmp_path, monkeypatch):
    fit(tmp_path / "whole")
    import nnlab.engine.callbacks as callbacks
    real = callbacks.save_checkpoint
    written = []

    def killed_after_best(path, state):
        written.append((path.name, state["epoch"]))
        if path.name == "last.pt" and state["epoch"] == 2:
            raise KeyboardInterrupt  # the process dies after best.pt of epoch 2, before its last.pt
        return real(path, state)

    monkeypatch.setattr(callbacks, "save_checkpoint", killed_after_best)
    with pytest.raises(KeyboardInterrupt):
        fit(tmp_path / "cut")
    monkeypatch.setattr(callbacks, "save_checkpoint", real)
    assert ("best.pt", 2) in written  # the kill did land between the two writes
    nnlab.fit(TwoLayer(), Blobs(300, 0), Blobs(100, 1), resume=tmp_path / "cut", stream=io.StringIO())
    assert_same_run(tmp_path / "cut", tmp_path / "whole")
    assert_same_run(tmp_path / "cut", tmp_path / "whole", checkpoint="best.pt")


def test_a_last_checkpoint_naming_a_best_epoch_the_best_file_lacks_is_refused(tmp_path):
    fit(tmp_path / "cut", stop_after_epochs=2)
    best = torch.load(tmp_path / "cut" / "best.pt", weights_only=True)
    best["epoch"] = 0  # as if best.pt still held an older epoch than last.pt records
    torch.save(best, tmp_path / "cut" / "best.pt")
    with pytest.raises(CheckpointError, match="the pair is inconsistent"):
        fit(tmp_path / "cut", resume=tmp_path / "cut", model=TwoLayer())


def test_a_run_directory_has_one_writer_at_a_time(tmp_path):
    fit(tmp_path / "cut", stop_after_epochs=1)
    holder = RunLock(tmp_path / "cut")  # another process training or resuming this run
    try:
        with pytest.raises(ConfigError, match=f"in use by PID {os.getpid()}"):
            nnlab.fit(TwoLayer(), Blobs(300, 0), resume=tmp_path / "cut", stream=io.StringIO())
    finally:
        holder.release()
    run = nnlab.fit(TwoLayer(), Blobs(300, 0), Blobs(100, 1), resume=tmp_path / "cut", stream=io.StringIO())
    assert run.summary["epochs"] == 4  # free again once the other writer is gone


def test_a_start_cleans_what_a_killed_run_left_and_never_duplicates_rows(tmp_path):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    from nnlab.config import save_config
    from nnlab.kit.api import CustomConfig
    save_config(CustomConfig(model="TwoLayer"), run_dir / "config.json")  # a run killed before its first checkpoint
    (run_dir / "metrics.jsonl").write_text('{"epoch": 1, "train_loss": 9.0}\n')
    (run_dir / ".best.pt.abc.tmp").write_bytes(b"half a checkpoint")
    fit(run_dir, epochs=2)
    rows = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 2 and '"train_loss": 9.0' not in rows[0]
    assert not list(run_dir.glob(".*.tmp"))


def test_out_must_be_a_new_or_empty_directory_or_an_unfinished_start(tmp_path, capsys):
    (tmp_path / "file").write_text("mine")
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"mine too")
    for out, message in ((tmp_path / "file", "is a file, not a directory"),
                         (tmp_path / "photos", "holds files that are not an nnlab run")):
        code, _, err = run_cli(capsys, "train", "iris-mlp", "--out", str(out))
        assert code == 2 and message in err
    assert (tmp_path / "file").read_text() == "mine" and (tmp_path / "photos" / "cat.jpg").read_bytes() == b"mine too"


@pytest.mark.parametrize("config", ["{}\n", '{"lr": 0.1}\n', '{"kind": "image", "learning_rate": 0.1}\n',
                                    '{"kind": "no-such-kind"}\n', "[1, 2]\n", "lr: 0.1\n", b"\xff\xfe\x00"])
def test_out_over_the_users_own_config_and_curves_is_refused_and_leaves_them_byte_identical(config, squares,
                                                                                             tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "config.json").write_bytes(config if isinstance(config, bytes) else config.encode())
    (out / "curves.png").write_bytes(b"\x89PNG my own curves")
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    code, out_text, err = run_cli(capsys, "train", "fashion-mlp", "--data", str(squares), "--out", str(out))
    assert code == 2 and out_text == "" and len(err.strip().splitlines()) == 1
    assert "holds files that are not an nnlab run's (config.json, curves.png)" in err and "--force" in err
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before


def test_a_start_that_died_before_its_first_checkpoint_is_replaced_but_not_a_picture_it_cannot_have_drawn(
        squares, tmp_path, capsys):
    from nnlab.config import save_config
    from nnlab.recipes import get_recipe
    out = tmp_path / "died"
    out.mkdir()
    save_config(get_recipe("fashion-mlp").config, out / "config.json")  # nnlab's, by content
    (out / "metrics.jsonl").write_text('{"epoch": 1}\n')
    (out / "curves.png").write_bytes(b"\x89PNG the user's")  # a run draws curves only once it has finished
    train = ["train", "fashion-mlp", "--data", str(squares), "--epochs", "1", "--set", "plots=false",
             "--set", "model_args.hidden=(16,)", "--out", str(out)]
    code, _, err = run_cli(capsys, *train)
    assert code == 2 and "holds files that are not an nnlab run's (curves.png)" in err
    assert (out / "curves.png").read_bytes() == b"\x89PNG the user's"
    (out / "curves.png").unlink()
    code, _, err = run_cli(capsys, *train)
    assert code == 0, err
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1 and (out / "summary.json").is_file()


@pytest.mark.parametrize("kept", [("model",), ("model", "model_name", "model_args", "classes", "kind", "config")])
def test_a_last_checkpoint_of_weights_alone_is_one_line_naming_the_file_and_what_it_lacks(kept, squares, tmp_path,
                                                                                          capsys):
    out = tmp_path / "cut"
    code, _, err = run_cli(capsys, "train", "fashion-mlp", "--data", str(squares), "--epochs", "2", "--out", str(out),
                           "--set", "stop_after_epochs=1", "--set", "plots=false", "--set", "model_args.hidden=(16,)")
    assert code == 0, err
    state = torch.load(out / "last.pt", weights_only=True)
    torch.save({key: value for key, value in state.items() if key in kept}, out / "last.pt")
    code, _, err = run_cli(capsys, "train", "--resume", str(out))
    assert code == 2 and len(err.strip().splitlines()) == 1, err  # was KeyError: 'step' and a traceback
    assert f"{out / 'last.pt'} lacks optimizer, scheduler, rng, epoch, step, best" in err


@pytest.mark.parametrize("flags, message", [
    (["--lr", "nan"], "lr must be a finite positive number"),
    (["--lr", "inf"], "lr must be a finite positive number"),
    (["--clip", "-1"], "--clip must be a positive gradient norm"),
    (["--patience", "-1"], "--patience must be at least 1"),
    (["--threads", "-1"], "--threads must be at least 1"),
    (["--seed", str(10**70)], "--seed must be in [0, 2**63)"),
    (["--nproc", "0"], "--nproc must be at least 1"),
])
def test_settings_no_run_can_use_are_one_line_errors(flags, message, tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "iris-mlp", "--out", str(tmp_path / "r"), *flags)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("damage, message", [
    (lambda state: state.pop("model_args"), "model_args is not dict"),
    (lambda state: state.__setitem__("classes", "T-shirt"), "classes is not a list of names"),
    (lambda state: state["model"].__setitem__(next(iter(state["model"])), torch.zeros(3, 3, 3)),
     "weights do not fit model"),
])
def test_malformed_checkpoints_are_refused_by_every_loader(damage, message, image_run, tmp_path, capsys):
    import shutil
    broken = tmp_path / "broken"
    shutil.copytree(image_run, broken)
    state = torch.load(broken / "best.pt", weights_only=True)
    damage(state)
    torch.save(state, broken / "best.pt")
    for argv in (["eval", str(broken)], ["export", str(broken), "--format", "onnx"],
                 ["summary", str(broken)], ["predict", str(broken), str(broken / "confusion.png")]):
        code, _, err = run_cli(capsys, *argv)
        assert code == 2 and message in err and "best.pt" in err, argv


def test_a_truncated_checkpoint_is_one_line_naming_the_file(image_run, tmp_path, capsys):
    import shutil
    broken = tmp_path / "cut"
    shutil.copytree(image_run, broken)
    data = (broken / "best.pt").read_bytes()
    for size in (0, 100, len(data) // 2, len(data) - 10):
        (broken / "best.pt").write_bytes(data[:size])
        code, _, err = run_cli(capsys, "eval", str(broken))
        assert code == 2 and "best.pt" in err and len(err.strip().splitlines()) == 1, size


def test_a_batch_larger_than_the_training_split_is_refused_not_trained_for_zero_steps(squares, tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "fashion-cnn", "--data", str(squares), "--batch-size", "100000",
                           "--out", str(tmp_path / "r"))
    assert code == 2 and "larger than the training split" in err and not (tmp_path / "r").exists()


def test_a_batch_larger_than_a_tabular_split_is_refused_with_the_largest_it_allows(tmp_path, capsys):
    from conftest import write_csv
    data = write_csv(tmp_path / "d.csv", ["a", "y"], [[i, "yes" if i % 2 else "no"] for i in range(40)])
    train = ["train", "tabular", "--csv", str(data), "--target", "y", "--epochs", "1", "--dry-run"]
    code, _, err = run_cli(capsys, *train, "--batch-size", "100000", "--out", str(tmp_path / "r"))
    assert code == 2 and "--batch-size 100000: larger than the training split (28 samples); give at most 28" in err
    assert not (tmp_path / "r").exists()
    assert run_cli(capsys, *train, "--batch-size", "28", "--out", str(tmp_path / "ok"))[0] == 0


def test_fit_refuses_a_batch_larger_than_the_dataset():
    from torch.utils.data import TensorDataset
    data = TensorDataset(torch.randn(20, 3), torch.randint(0, 2, (20,)))
    with pytest.raises(ConfigError, match=r"larger than the training split \(20 samples\); give at most 20"):
        nnlab.fit(torch.nn.Linear(3, 2), data, epochs=1, batch_size=64)


def test_an_empty_label_is_refused_and_predictions_never_overwrite_their_input(tmp_path, capsys):
    from conftest import write_csv
    rows = [[i, "yes" if i % 2 else "no"] for i in range(40)]
    bad = write_csv(tmp_path / "bad.csv", ["a", "y"], rows[:10] + [[10, ""]] + rows[11:])
    code, _, err = run_cli(capsys, "train", "tabular", "--csv", str(bad), "--target", "y", "--out", str(tmp_path / "r"))
    assert code == 2 and f"{bad}: line 12: empty 'y'" in err
    good = write_csv(tmp_path / "good.csv", ["a", "y"], rows)
    code, _, err = run_cli(capsys, "train", "tabular", "--csv", str(good), "--target", "y", "--epochs", "2",
                           "--batch-size", "16", "--out", str(tmp_path / "run"))
    assert code == 0, err
    before = good.read_bytes()
    code, _, err = run_cli(capsys, "predict", str(tmp_path / "run"), "--csv", str(good), "-o", str(good))
    assert code == 2 and "is the input file" in err and good.read_bytes() == before


def test_outputs_never_replace_their_inputs_nor_the_runs_files(image_run, tmp_path, capsys):
    import shutil

    from nnlab.data.images import save_image
    run = tmp_path / "run"
    shutil.copytree(image_run, run)
    shirt, style = tmp_path / "shirt.png", tmp_path / "style.png"
    save_image(torch.full((3, 28, 28), 40, dtype=torch.uint8), shirt)
    save_image(torch.full((3, 28, 28), 200, dtype=torch.uint8), style)
    guarded = [shirt, style, *(run / name for name in ("config.json", "best.pt", "last.pt", "summary.json",
                                                        "metrics.jsonl", "lr.csv"))]
    before = {path: path.read_bytes() for path in guarded}
    refusals = [(["predict", str(run), str(shirt), "--csv", str(shirt)], "is the input file"),
                *((["export", str(run), "--format", "safetensors", "-o", str(run / name)], "is one of the run's files")
                  for name in ("best.pt", "config.json", "last.pt", "metrics.jsonl", "config")),  # config: config.json
                *((["stylize", str(shirt), str(style), "-o", str(out), "--weights", "random", "--size", "32",
                    "--steps", "1"], "is an input image") for out in (shirt, style))]
    for argv, message in refusals:
        code, _, err = run_cli(capsys, *argv)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, argv
    assert {path: path.read_bytes() for path in guarded} == before
    code, _, err = run_cli(capsys, "export", str(run), "--format", "safetensors", "-o", str(run / "model.st"))
    assert code == 0 and (run / "model.st").is_file() and (run / "model.st.json").is_file(), err


def test_force_replaces_a_run_or_writes_among_other_files_but_never_beside_a_live_writer(tmp_path, capsys):
    from conftest import write_csv
    data = write_csv(tmp_path / "d.csv", ["a", "y"], [[i, "yes" if i % 2 else "no"] for i in range(40)])
    train = ["train", "tabular", "--csv", str(data), "--target", "y", "--batch-size", "16"]
    run = tmp_path / "run"
    assert run_cli(capsys, *train, "--epochs", "3", "--out", str(run))[0] == 0
    (run / "snapshots").mkdir()
    (run / "snapshots" / "cycle-1.pt").write_bytes(b"an old run's snapshot")
    code, _, err = run_cli(capsys, *train, "--epochs", "2", "--out", str(run))
    assert code == 2 and "already holds a run" in err and "--force" in err
    holder = RunLock(run)  # another process writing it: --force does not override the lock
    try:
        code, _, err = run_cli(capsys, *train, "--epochs", "2", "--out", str(run), "--force")
        assert code == 2 and f"in use by PID {os.getpid()}" in err
    finally:
        holder.release()
    assert (run / "snapshots" / "cycle-1.pt").exists()  # refused: nothing of the old run removed
    code, _, err = run_cli(capsys, *train, "--epochs", "2", "--out", str(run), "--force")
    assert code == 0, err
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2 and not (run / "snapshots").exists()
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 2
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "cat.jpg").write_bytes(b"mine")
    code, _, err = run_cli(capsys, *train, "--epochs", "2", "--out", str(photos), "--force")
    assert code == 0 and (photos / "cat.jpg").read_bytes() == b"mine" and (photos / "summary.json").is_file()
    code, _, err = run_cli(capsys, "train", "--resume", str(run), "--force")
    assert code == 2 and "give no recipe, --out or --force" in err


def test_a_names_folder_with_one_class_left_to_learn_is_one_line_and_exit_2(tmp_path, capsys):
    from conftest import stem_maker
    stems = stem_maker(0, 5)
    one, thin = tmp_path / "one", tmp_path / "thin"
    for folder in (one, thin):
        folder.mkdir()
        (folder / "Alpha.txt").write_text("\n".join(s + "ov" for s in stems(100)) + "\n")
    (thin / "Beta.txt").write_text("Smith\n" * 50)  # one distinct name: it goes to the test split
    (thin / "Gamma.txt").write_text("\n".join(s + "ini" for s in stems(100)) + "\n")
    for data, flags, message in (
            (one, [], "names of 1 class (Alpha) to train on (after removing 0 duplicate lines); a classifier needs"),
            (thin, ["--set", "test_fraction=0.6"], "class Beta has no training names after removing 49 duplicate")):
        code, _, err = run_cli(capsys, "train", "names-rnn", "--data", str(data), "--out", str(tmp_path / "r"), *flags)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "r").exists()


def test_a_corrupt_cifar_archive_is_one_line_naming_the_file(tmp_path, capsys):
    import random

    from test_cifar import cifar10_members, write_archive
    good = write_archive(tmp_path / "good.tar.gz", cifar10_members(20)).read_bytes()
    (tmp_path / "data").mkdir()
    archive = tmp_path / "data" / "cifar-10-python.tar.gz"
    rng = random.Random(0)
    damaged = [good[:n] for n in (0, 1, 10, 100, len(good) // 2, len(good) - 1)]
    for offset in [72, 2472, *(rng.randrange(len(good)) for _ in range(6))]:  # 72, 2472: tarfile's many-line errors
        flipped = bytearray(good)
        flipped[offset] ^= 4
        damaged.append(bytes(flipped))
    from nnlab.data.cifar import CIFAR10_LAYOUT, read_cifar
    from nnlab.errors import DataError
    refused = 0
    for data in damaged:
        archive.write_bytes(data)
        try:
            read_cifar(archive, CIFAR10_LAYOUT)
        except DataError as error:
            refused += 1
            assert str(error).startswith(f"{archive}:") and "\n" not in str(error), str(error)  # ARCHIVE[:MEMBER]:
    assert refused == len(damaged)  # a flipped pixel too: the reader reads to the gzip CRC
    archive.write_bytes(damaged[6])  # through the CLI: the one line and exit 2
    code, _, err = run_cli(capsys, "train", "cifar10-resnet", "--data", str(tmp_path / "data"), "--out",
                           str(tmp_path / "r"))
    assert code == 2 and err.startswith(f"nnlab: error: {archive}: not a readable gzip-compressed tar archive")
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "r").exists()


def test_a_path_the_filesystem_refuses_is_one_line_naming_it(image_run, tmp_path, capsys, monkeypatch):
    import errno

    from nnlab.files import atomic_write
    (tmp_path / "afile").write_text("mine")
    beneath = tmp_path / "afile" / "run"                  # a folder inside a file: the OS refuses it, even for root
    code, _, err = run_cli(capsys, "train", "iris-mlp", "--out", str(beneath))
    assert code == 2 and len(err.strip().splitlines()) == 1 and str(tmp_path / "afile") in err
    code, _, err = run_cli(capsys, "export", str(image_run), "--format", "onnx", "-o", str(beneath / "m.onnx"))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err

    def full(handle):
        raise OSError(errno.ENOSPC, "No space left on device")
    target = tmp_path / "out" / "m.bin"
    with pytest.raises(OSError, match="No space left on device") as caught:
        atomic_write(target, full)
    assert caught.value.filename == str(target) and not any((tmp_path / "out").iterdir())  # no temp file left
    assert (tmp_path / "afile").read_text() == "mine"
