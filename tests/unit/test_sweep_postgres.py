"""``nnlab sweep --storage postgresql://...`` on a real PostgreSQL server: workers racing for the same
waiting trials claim each once, and two sweeps started like on two machines (each its own process
and ``--out``) share one study and split its trials, none run twice, none lost.

The server is a throwaway cluster (``initdb`` + ``pg_ctl``, TCP on a free loopback port, no unix
socket, fsync off) in a temporary directory, stopped and removed afterwards. PostgreSQL refuses to
run as root, so under root the cluster runs as the ``postgres`` user (or ``nobody``) in a directory
of /tmp it owns. Without the server binaries (Debian's ``postgresql``: ``make postgres`` as root) or
the driver (``psycopg``, in the dev extra) the tests skip, saying which (under ``NNLAB_REQUIRE_ALL=1``
they fail).
"""
import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import optuna
import pytest

import prerequisites
from conftest import require, require_module, run_cli
from test_sweep import SweepElsewhere, claim_race, jobs, tiny


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def postgres(tmp_path_factory):
    """``postgresql://nnlab@127.0.0.1:PORT/postgres`` of a cluster started for this module."""
    require_module("psycopg", "psycopg")
    bindir = prerequisites.postgres_bindir()
    require(bindir, "postgresql")
    run_as = {}
    if os.geteuid() == 0:  # initdb and postgres refuse root: an unprivileged user in a directory it owns
        user = next(pwd.getpwnam(name) for name in ("postgres", "nobody")
                    if name in {entry.pw_name for entry in pwd.getpwall()})
        root = Path(tempfile.mkdtemp(prefix="nnlab-pg-"))
        os.chown(root, user.pw_uid, user.pw_gid)
        run_as = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    else:
        root = tmp_path_factory.mktemp("pg")
    data, port = root / "data", free_port()

    def pg(*argv):
        return subprocess.run([str(bindir / argv[0]), *argv[1:]], cwd=root, capture_output=True, text=True,
                              timeout=60, **run_as)

    try:
        made = pg("initdb", "-D", str(data), "-U", "nnlab", "-A", "trust", "-E", "UTF8", "--no-sync")
        assert made.returncode == 0, made.stderr
        options = (f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories='' -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off")
        started = pg("pg_ctl", "-D", str(data), "-l", str(root / "server.log"), "-o", options, "-w", "-t", "30",
                     "start")
        assert started.returncode == 0, started.stderr + (root / "server.log").read_text(errors="replace")
        yield f"postgresql://nnlab@127.0.0.1:{port}/postgres"
    finally:
        if data.is_dir():
            pg("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
        if run_as:
            shutil.rmtree(root, ignore_errors=True)


def test_workers_racing_for_the_same_waiting_trials_on_postgresql_claim_each_once(postgres):
    wins, trial_ids = claim_race(postgres)
    assert sorted(wins) == sorted(trial_ids)


@pytest.mark.slow  # two interpreters training 8 runs: ~25 s on an idle 2-core host, more under load
def test_two_sweeps_on_one_postgresql_study_split_its_trials(postgres, squares, tmp_path, capsys, monkeypatch):
    """A 2x2 grid x 2 seeds: one sweep in a child process (another machine) claims its first trial and
    waits; the same command here, with its own --out, lets it go once it starts a trial of its own
    (so both train some, whatever the host's speed): 8 trials between them, each once."""
    import nnlab.commands.sweep_workers as workers
    argv = ["sweep", "fashion-cnn", "--grid", "lr=3e-3,3e-2", "--grid", "optimizer=adamw,sgd", "--seeds", "2",
            "--storage", postgres, "--study", "pg-two", *tiny(squares)]
    there, here = tmp_path / "there", tmp_path / "here"
    other = SweepElsewhere([*argv, "--out", str(there)], at=1, log=tmp_path / "there.log")
    try:
        assert other.waiting(), other.finish()[1]
        real = workers.train_or_continue

        def train_or_continue(*args, **kwargs):  # this sweep's trials: the first lets the other go on
            other.go()
            return real(*args, **kwargs)
        monkeypatch.setattr(workers, "train_or_continue", train_or_continue)
        code, stdout, err = run_cli(capsys, *argv, "--out", str(here), "--json")
        assert code == 0, err
    finally:  # let go (never left waiting, whatever failed here) and wait for it
        other_code, other_log = other.finish()
    assert other_code == 0, other_log
    trials = optuna.load_study(study_name="pg-two", storage=postgres).trials
    assert len(trials) == 8 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert len(set(jobs(trials))) == 8
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both sweeps trained some
    finished = {out: {p.name for p in out.iterdir() if (p / "summary.json").is_file()} for out in (there, here)}
    assert all(finished.values()) and not finished[there] & finished[here]  # each trial trained on one side
    assert finished[there] | finished[here] == {t.user_attrs["run_dir"] for t in trials}
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["trials_done"] == 8 and summary["complete"] and summary["storage"] == postgres
    assert "/8] " in other_log  # the other side reported its trials
