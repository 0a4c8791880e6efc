"""A run of your own ``nn.Module`` (``nnlab.fit``) opens in a new process with ``nnlab.load(RUN, model=Net())``,
where ``Net`` is defined in that process's ``__main__`` (a notebook's or a script's): the checkpoint holds
weights only, so no class has to be importable under the name it had when the run was trained (the
failure of fastai's pickled ``load_learner``). ``evaluate``, ``predict`` and ``nnlab.interpret`` then
give what they gave in the training process.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

import nnlab
from nnlab.errors import CheckpointError, ConfigError

# One script, run twice as __main__: "fit" trains and reports; "load" (a new process) opens the run and
# reports the same things. Net and the data live in __main__ both times.
SCRIPT = textwrap.dedent('''
    import io, json, sys
    import torch
    from torch import nn
    from torch.utils.data import TensorDataset
    import nnlab

    class Net(nn.Module):
        """Tiny images [1, 4, 4] -> 3 classes."""
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 3))

        def forward(self, x):
            return self.body(x)

    def blobs(n, seed):
        g = torch.Generator().manual_seed(seed)
        y = torch.randint(0, 3, (n,), generator=g)
        x = torch.randn(n, 1, 4, 4, generator=g) * 0.7
        x[:, 0, 0, 0] += 2.0 * (y == 0)
        x[:, 0, 3, 3] += 2.0 * (y == 1)
        return TensorDataset(x, y)

    torch.set_num_threads(1)
    mode, run_dir = sys.argv[1], sys.argv[2]
    valid = blobs(90, 1)
    if mode == "fit":
        torch.manual_seed(0)
        run = nnlab.fit(Net(), blobs(300, 0), valid, epochs=3, lr=1e-2, batch_size=32, out=run_dir,
                        stream=io.StringIO(), plots=False)
    else:
        run = nnlab.load(run_dir, model=Net())  # a fresh Net: its weights come from best.pt
    report = nnlab.interpret(run, valid, classes=["a", "b", "c"], top=3, out=run_dir + "/interpret-" + mode)
    print(json.dumps({"kind": run.kind.name, "evaluate": run.evaluate(valid),
                      "predict": run.predict(valid.tensors[0][:4]).tolist(),
                      "confusion": report["confusion"], "top_losses": report["top_losses"],
                      "pictures": sorted(key for key in report if key.endswith("_png"))}))
''')


def run_script(script, *argv):
    """The JSON the script prints as ``__main__`` in a new Python process (one thread, the test's cache)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(script), *argv], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_users_model_from_main_loads_in_a_new_process_and_evaluates_predicts_and_interprets(tmp_path):
    script = tmp_path / "own_model.py"
    script.write_text(SCRIPT)
    run_dir = str(tmp_path / "run")
    trained = run_script(script, "fit", run_dir)
    loaded = run_script(script, "load", run_dir)
    assert loaded == trained and loaded["kind"] == "custom"
    assert loaded["evaluate"]["n"] == 90 and loaded["evaluate"]["accuracy"] > 0.5
    assert sum(map(sum, loaded["confusion"])) == 90 and len(loaded["top_losses"]) == 3
    assert loaded["pictures"] == ["confusion_png", "top_losses_png"]  # [1, 4, 4] inputs are images
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["model"] == "Net"  # a record of the class's name; nothing imports it


def test_a_model_the_weights_do_not_fit_is_refused_naming_the_tensor(tmp_path):
    data = torch.utils.data.TensorDataset(torch.randn(32, 2), torch.randint(0, 2, (32,)))
    nnlab.fit(nn.Sequential(nn.Linear(2, 4), nn.Linear(4, 2)), data, epochs=1, batch_size=16, out=tmp_path / "run",
              stream=io.StringIO(), plots=False)
    with pytest.raises(CheckpointError, match=r"best.pt: the weights do not fit the model given \(Sequential\): "
                                              r"size mismatch for 0.weight"):
        nnlab.load(tmp_path / "run", model=nn.Sequential(nn.Linear(2, 5), nn.Linear(5, 2)))
    with pytest.raises(ConfigError, match=r"model=YourModel\(\)"):
        nnlab.load(tmp_path / "run").evaluate(data)
