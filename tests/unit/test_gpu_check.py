"""benchmarks/gpu_check.sh stays runnable on a machine without a GPU: its --device cpu --smoke mode,
the failures it reports as rows, and the JSON its shell wrapper prints when Python dies."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def load_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def run_script(tmp_path, *args, **env):
    done = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "out"),
                               "NNLAB_CACHE": str(tmp_path / "cache"), **env})
    return done.returncode, json.loads(done.stdout.strip().splitlines()[-1]), done


def test_smoke_steps_in_process_measure_each_figure(tmp_path, capsys):
    check = load_check()
    code = check.main(["--device", "cpu", "--smoke", "--out", str(tmp_path / "out"),
                       "--steps", "environment,fashion_cnn_cpu,cifar10_resnet,char_lstm"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0, result["failed"]
    steps = result["steps"]
    assert steps["fashion_cnn_cpu"]["skipped"].startswith("the check runs on the CPU")
    assert steps["cifar10_resnet"]["projected_epoch_s"] > 0 and steps["cifar10_resnet"]["train_images"] == 192
    assert steps["char_lstm"]["chars_per_s"] > 0
    assert json.loads((tmp_path / "out" / "gpu_check.json").read_text()) == result
    assert (tmp_path / "out" / "cifar10_resnet.log").read_text()


def test_comparison_sets_the_device_beside_the_cpu_and_each_switch_beside_fp32():
    check = load_check()
    rows = {"fashion_cnn": {"ok": True, "test_accuracy": 0.91, "steady_train_per_s": 40000.0},
            "fashion_cnn_cpu": {"ok": True, "test_accuracy": 0.915, "steady_train_per_s": 8000.0},
            "fp32": {"ok": True, "steady_train_per_s": 30000.0}, "bf16": {"ok": True, "steady_train_per_s": 45000.0},
            "fp16": {"ok": False, "error": "boom"}}
    out = check.compare(rows)
    assert out["fashion_cnn_accuracy"]["difference"] == -0.005 and out["fashion_cnn_speedup_vs_cpu"] == 5.0
    assert out["steady_ratio_to_fp32"] == {"bf16": 1.5}


def test_a_step_that_fails_is_a_row_and_the_others_still_run(tmp_path, capsys):
    check = load_check()
    # On a machine without CUDA, --device cuda fails every step; each is reported, none ends the check.
    code = check.main(["--device", "cuda", "--smoke", "--out", str(tmp_path / "out"), "--steps", "environment,fp16,char_lstm"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    if not result["steps"]["environment"]["ok"]:
        assert code == 3 and result["failed"] == ["environment", "fp16", "char_lstm"]
        assert "no CUDA device" in result["steps"]["fp16"]["error"]
    else:  # a machine with a GPU: the steps work
        assert code == 0


def test_a_bad_data_folder_is_one_line_and_exit_2(tmp_path, capsys):
    check = load_check()
    assert check.main(["--device", "cpu", "--smoke", "--out", str(tmp_path), "--fashion", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "none" in err and len(err.strip().splitlines()) == 1


def test_the_wrapper_prints_json_with_the_finished_steps_when_python_is_stopped(tmp_path):
    code, result, _ = run_script(tmp_path, "--device", "cpu", "--smoke", GPU_CHECK_TIMEOUT="1")
    assert code == 124 and result["crashed"] and result["timed_out"]


@pytest.mark.slow
def test_the_whole_smoke_check_through_the_shell_script(tmp_path):
    """Every step, torchrun (gloo) and torch.compile (traced, aot_eager) included, as the GPU machine runs it."""
    code, result, done = run_script(tmp_path, "--device", "cpu", "--smoke")
    assert code == 0, (result.get("failed"), done.stderr[-2000:])
    steps = result["steps"]
    assert steps["ddp"]["backend"] == "gloo" and steps["ddp"]["all_reduce_ok"]
    assert steps["ddp"]["nnlab_train"]["epochs"] == 1
    assert steps["fashion_cnn"]["device"] == "cpu" and 0.0 <= steps["fashion_cnn"]["test_accuracy"] <= 1.0
    assert steps["compile"]["ok"] and steps["fp16"]["precision"] == "fp16" and steps["fp32"]["precision"] == "fp32"
    assert set(result["comparison"]["steady_ratio_to_fp32"]) == {"bf16", "fp16", "compile"}
    # traced only (dynamo and AOT autograd): inductor's compiling took 6 minutes of a 25 s check
    assert steps["compile"]["backend"] == "aot_eager (smoke)"
