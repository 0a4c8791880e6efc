"""TensorBoard event files of a run, read back with tensorboard's own reader: they match metrics.jsonl
and lr.csv, carry the config as hparams, continue across a resume, and the switch turns them off."""
import io
import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from conftest import tiny_image, write_square_fashion
from nnlab.engine.tensorboard import hparam_values
from nnlab.recipes import train


@pytest.fixture(scope="module")
def squares(tmp_path_factory):
    """300 training images: 4 steps an epoch at the tiny settings (the step counts below)."""
    return write_square_fashion(tmp_path_factory.mktemp("squares") / "fashion-mnist", n_train=300, n_test=100)


def tiny(squares, **extra):
    return tiny_image(squares, **{"epochs": 2, **extra})


def events(run_dir):
    reader = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
    reader.Reload()
    return reader


def scalars(reader, tag):
    return [(event.step, event.value) for event in reader.Scalars(tag)]


def test_event_files_match_metrics_jsonl_and_lr_csv(squares, tmp_path):
    run = tmp_path / "run"
    train("fashion-cnn", out=run, overrides=tiny(squares), stream=io.StringIO())
    assert list(run.glob("events.out.tfevents.*"))
    reader = events(run)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    keys = [key for key, value in rows[0].items()  # every number of the row (the per-step lr_K stand for lr)
            if key not in ("epoch", "lr") and isinstance(value, (int, float)) and not isinstance(value, bool)]
    assert {"train_loss", "valid_loss", "valid_acc", "train_acc", "seconds"} <= set(keys)
    assert set(keys) <= set(reader.Tags()["scalars"])
    for key in keys:
        assert scalars(reader, key) == [(row["epoch"], pytest.approx(row[key], rel=1e-6)) for row in rows], key
    lines = (run / "lr.csv").read_text().splitlines()
    columns = lines[0].split(",")[1:]
    for i, column in enumerate(columns):
        expected = [(int(line.split(",")[0]), pytest.approx(float(line.split(",")[1 + i]), rel=1e-6))
                    for line in lines[1:]]
        assert scalars(reader, column) == expected and len(expected) == 2 * 4  # 2 epochs of 4 steps


def test_the_config_is_written_as_hparams(squares, tmp_path):
    run = tmp_path / "run"
    train("fashion-cnn", out=run, overrides=tiny(squares, epochs=1, lr=0.02), stream=io.StringIO())
    content = events(run).PluginTagToContent("hparams")
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(content)
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["lr"].number_value == 0.02
    assert start.hparams["optimizer"].string_value == "adamw"
    assert start.hparams["model_args.widths"].string_value == "[8, 16, 16]"


def test_a_resumed_run_continues_its_events_without_repeating_an_epoch(squares, tmp_path):
    run = tmp_path / "cut"
    train("fashion-cnn", out=run, overrides=tiny(squares, stop_after_epochs=1), stream=io.StringIO())
    train(None, resume=run, stream=io.StringIO())
    assert len(list(run.glob("events.out.tfevents.*"))) == 2
    steps = [step for step, _ in scalars(events(run), "valid_acc")]
    assert steps == [1, 2]
    assert [step for step, _ in scalars(events(run), "lr_0")] == list(range(8))


def test_the_switch_turns_tensorboard_off(squares, tmp_path):
    run = tmp_path / "off"
    train("fashion-cnn", out=run, overrides=tiny(squares, epochs=1, tensorboard=False), stream=io.StringIO())
    assert (run / "metrics.jsonl").is_file() and not list(run.glob("events.out.tfevents.*"))


def test_hparam_values_flatten_and_stringify():
    assert hparam_values({"lr": 0.1, "model_args": {"widths": (8, 16)}, "clip": None, "tta": True}) == {
        "lr": 0.1, "model_args.widths": "[8, 16]", "clip": "null", "tta": True}


def test_a_resumed_runs_event_file_sorts_after_the_ones_before_it(tmp_path, monkeypatch):
    """TensorBoard reads event files in name order; the name starts with the second it was made in.
    On a stand-in clock (its sleeps move it on), the wait is the rest of that second, or none."""
    from nnlab.engine import tensorboard

    class Clock:
        now, sleeps = 1_700_000_000.25, []

        def time(self):
            return self.now

        def sleep(self, seconds):
            self.sleeps.append(seconds)
            self.now += seconds
    clock = Clock()
    monkeypatch.setattr(tensorboard, "time", clock)
    (tmp_path / "events.out.tfevents.1700000000.host.1.9").write_bytes(b"")
    tensorboard.wait_for_a_later_second(tmp_path)
    assert clock.sleeps == [pytest.approx(0.75)] and int(clock.now) > 1_700_000_000  # a file made now sorts after
    tensorboard.wait_for_a_later_second(tmp_path / "empty-folder")  # nothing to sort after: no wait
    clock.now = 1_700_000_005.5                                       # a later second already: no wait either
    tensorboard.wait_for_a_later_second(tmp_path)
    assert clock.sleeps == [pytest.approx(0.75), 0.0]
