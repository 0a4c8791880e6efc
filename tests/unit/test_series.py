"""Time series: windows, CSV column reading, and an LSTM that beats the last-value forecast (generated data)."""
import io
import json
import math

import pytest
import torch

from conftest import assert_same_run
from nnlab.cli import main
from nnlab.engine.checkpoint import load_checkpoint
from nnlab.data.series import make_windows, read_series, sine_waves
from nnlab.errors import DataError
from nnlab.kinds import series as series_task
from nnlab.recipes import train as train_recipe


pytestmark = pytest.mark.usefixtures("one_thread")


def test_windows_follow_the_docstring_example():
    x, y = make_windows(torch.arange(6.0), window=3, horizon=1)
    assert x.tolist() == [[0, 1, 2], [1, 2, 3], [2, 3, 4]] and y.tolist() == [[3], [4], [5]]
    x, y = make_windows(torch.arange(6.0), window=2, horizon=2)
    assert y.tolist() == [[2, 3], [3, 4], [4, 5]]
    with pytest.raises(DataError, match="too short"):
        make_windows(torch.arange(3.0), window=3, horizon=1)


def test_csv_column_is_read_and_bad_columns_are_named(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("day,temp\n1,3.5\n2,4\n3,x\n")
    with pytest.raises(DataError, match="line 4: column 'temp' holds 'x'"):
        read_series(path, "temp")
    with pytest.raises(DataError, match="no column 'rain'; columns are: day, temp"):
        read_series(path, "rain")
    path.write_text("day,temp\n1,3.5\n2,4\n")
    assert read_series(path, "temp").tolist() == [3.5, 4.0]


def test_sine_rnn_beats_the_naive_forecast(tmp_path):
    summary = train_recipe("sine-rnn", out=tmp_path / "run", stream=io.StringIO(),
                                overrides={"length": 1200, "epochs": 8, "hidden_size": 16})
    assert summary["valid_mse"] < summary["naive_mse"] and summary["skill"] > 0.2
    assert summary["skill"] == pytest.approx(1 - summary["valid_mse"] / summary["naive_mse"])
    for name in ("forecast.png", "curves.png", "best.pt", "metrics.jsonl"):
        assert (tmp_path / "run" / name).is_file()
    again = series_task.evaluate(tmp_path / "run")
    assert again["valid_mse"] == pytest.approx(summary["valid_mse"], rel=1e-5)


def test_cli_series_on_a_csv_and_its_errors(tmp_path, capsys):
    path = tmp_path / "s.csv"
    values = sine_waves(400, 0.05, 1).tolist()
    path.write_text("t,v\n" + "".join(f"{i},{v}\n" for i, v in enumerate(values)))
    assert main(["train", "series", "--csv", str(path), "--column", "v", "--out", str(tmp_path / "r"),
                 "--dry-run", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["dataset"].endswith(":v") and math.isfinite(summary["valid_mae"])
    assert main(["train", "series", "--csv", str(path), "--column", "w"]) == 2
    assert "no column 'w'" in capsys.readouterr().err
    assert main(["train", "series"]) == 2
    assert "--csv FILE --column NAME" in capsys.readouterr().err


def test_interrupted_series_run_resumes_to_the_uninterrupted_result(tmp_path):
    overrides = {"length": 600, "epochs": 3, "hidden_size": 8}
    whole = train_recipe("sine-rnn", out=tmp_path / "whole", stream=io.StringIO(), overrides=overrides)
    stopped = train_recipe("sine-rnn", out=tmp_path / "cut", stream=io.StringIO(),
                                overrides={**overrides, "stop_after_epochs": 2})
    assert stopped["stopped_after_epochs"] == 2
    resumed = train_recipe(None, resume=tmp_path / "cut", stream=io.StringIO())
    assert_same_run(tmp_path / "cut", tmp_path / "whole")
    assert resumed["valid_mse"] == whole["valid_mse"]


def test_resume_from_a_checkpoint_without_resume_state_is_refused(tmp_path, capsys):
    from nnlab.engine.checkpoint import save_checkpoint
    cut = tmp_path / "cut"
    train_recipe("sine-rnn", out=cut, stream=io.StringIO(),
                      overrides={"length": 300, "epochs": 2, "hidden_size": 4, "stop_after_epochs": 1})
    old = load_checkpoint(cut / "last.pt")
    save_checkpoint(cut / "last.pt", {k: v for k, v in old.items() if k not in ("scheduler", "rng")})
    assert main(["train", "--resume", str(cut)]) == 2
    assert "last.pt lacks scheduler, rng" in capsys.readouterr().err
