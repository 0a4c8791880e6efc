"""The workers of a sweep (``nnlab.commands.sweep``) on one Optuna study: open the database,
create and plan the study once, claim waiting trials, train each into its run directory, take over
the trials of dead workers, and run ``--workers K`` local processes.

How the study stays exact with many workers (processes or machines): the process that creates
it enqueues every job (a grid's (setting, seed) pairs, or one seed-0 slot per random/TPE trial,
whose claimer draws the setting and enqueues its other seeds); a worker claims a job by moving it
from WAITING to RUNNING, which the database grants to one worker only (``serialize_sqlite`` makes
SQLite's claim one step, as a row lock does elsewhere); a RUNNING job whose worker
is gone (its pid on this host, or no heartbeat for ``STALE_SECONDS`` from elsewhere) is failed and
enqueued again by whichever worker fails it first (a failed trial cannot fail twice).
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TextIO

from nnlab import errors
from nnlab.errors import ConfigError, NnlabError

if TYPE_CHECKING:
    from nnlab.commands.sweep import Plan

HEARTBEAT_SECONDS = 20.0
STALE_SECONDS = 120.0        # a trial of another machine without a heartbeat for this long is taken over
CLAIM_GRACE_SECONDS = 10.0   # a claimed trial that names no worker this long after its start: its claimer died
PLAN_WAIT_SECONDS = 60.0     # how long a worker waits for the study's creator to finish planning
POLL_SECONDS = 0.5           # how often a worker with nothing to claim looks at the others' trials
SCHEMA_ATTEMPTS = 8          # tries to open a database whose tables another process is creating


def hide_password(url: str) -> str:
    try:
        import sqlalchemy
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL sqlalchemy parses: say it as given, it holds no parsed password
        return url


def open_storage(url: str) -> Any:
    """Optuna's ``RDBStorage`` on ``url``; a database that cannot be reached (or a driver that is not
    installed) is a ``ConfigError`` naming the URL, its password hidden."""
    import optuna
    import sqlalchemy
    dialect = url.split(":", 1)[0].split("+")[0]
    connect = {"timeout": 60} if dialect == "sqlite" else {"connect_timeout": 10} if dialect in (
        "postgresql", "mysql") else {}
    for attempt in itertools.count(1):
        try:
            storage = optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": connect})
            if dialect == "sqlite":
                serialize_sqlite(storage.engine)
            return storage
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError) as error:
            # several machines starting on a new PostgreSQL/MySQL database at once: one creates Optuna's
            # tables, the others' CREATE collides with it; once the tables exist every process opens them
            if attempt == SCHEMA_ATTEMPTS:
                raise storage_error(url, error) from None
            time.sleep(0.2 * attempt)
        except (ImportError, ValueError, OSError, sqlalchemy.exc.SQLAlchemyError,
                optuna.exceptions.OptunaError) as error:
            raise storage_error(url, error) from None


def serialize_sqlite(engine: Any) -> None:
    """Make each transaction on this SQLite engine ``BEGIN IMMEDIATE``.

    Python's sqlite3 starts a transaction only at the first write, so the read-check-write of a
    claim (``set_trial_state_values``: is it still WAITING? then RUNNING) ran as two steps, and two
    workers could both move the same trial to RUNNING (measured: 12 of 40 trials claimed twice by
    4 threads). With the write lock taken at ``BEGIN`` the whole claim is one step, the others
    waiting (busy timeout); PostgreSQL and MySQL lock the row (``SELECT ... FOR UPDATE``).
    """
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # the driver's own BEGIN off: SQLAlchemy's below

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # the connections made while opening (tables, version) came before the hooks


def storage_error(url: str, error: BaseException) -> ConfigError:
    cause = error.__cause__ or error
    reason = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    return ConfigError(f"--storage {hide_password(url)}: cannot open the study database: {reason}")


def retry(call: Callable[[], Any], attempts: int = 20) -> Any:
    """``call()``, again after a short wait while the database is busy (SQLite under several writers)."""
    import optuna
    for attempt in range(attempts):
        try:
            return call()
        except optuna.exceptions.StorageInternalError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))


def open_study(plan: Plan, storage: Any, sampler: Any = None) -> Any:
    """The plan's study: created and planned by the first process to get there; every other one waits
    until planning is done and checks that the study was made by the same sweep."""
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(storage=storage, study_name=plan.study, direction=plan.direction,
                                    sampler=sampler)
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=plan.study, storage=storage, sampler=sampler)
    else:
        study.set_user_attr("nnlab", plan.signature())
        enqueue_plan(plan, study)
        study.set_user_attr("planned", True)
        return study
    deadline = time.monotonic() + PLAN_WAIT_SECONDS
    while not study.user_attrs.get("planned"):
        if time.monotonic() > deadline:
            raise ConfigError(f"study {plan.study!r} in {hide_password(plan.storage)} was never planned "
                              "(its creator stopped at once); choose another --study")
        time.sleep(0.2)
    if study.user_attrs.get("nnlab") != plan.signature():
        raise ConfigError(f"study {plan.study!r} in {hide_password(plan.storage)} belongs to another sweep "
                          f"({json.dumps(study.user_attrs.get('nnlab'))}); give another --out or --study")
    return study


def enqueue_plan(plan: Plan, study: Any) -> None:
    """Enqueue every (setting, seed) of a grid, or one seed-0 slot per random/TPE trial."""
    if plan.search == "grid":
        settings = itertools.product(*[axis.texts for axis in plan.axes])
        for slot, values in enumerate(settings):
            for seed in plan.seeds:
                study.enqueue_trial(dict(zip([a.key for a in plan.axes], values)),
                                    user_attrs={"slot": slot, "seed": seed})
    else:
        for slot in range(plan.trials):
            study.enqueue_trial({}, user_attrs={"slot": slot, "seed": plan.seeds[0], "expand": True})


def sampler_for(plan: Plan, slot: int) -> Any:
    """The sampler that draws slot ``slot``'s setting, seeded by the study and the slot (reproducible
    whichever worker draws it)."""
    import optuna
    seed = int(hashlib.sha1(f"{plan.study}:{slot}".encode()).hexdigest()[:8], 16)
    if plan.search == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    startup = min(10, max(2, (plan.trials or 0) // 3))
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, constant_liar=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child its parent has not waited for yet is a zombie: dead
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def is_stale(trial: Any) -> bool:
    """Whether the running ``trial``'s worker is gone: its pid on this host, or its heartbeat elsewhere."""
    started = trial.datetime_start.timestamp() if trial.datetime_start else 0.0
    if "worker" not in trial.user_attrs:  # claimed, and its claimer died before it could sign the trial
        return time.time() - started > CLAIM_GRACE_SECONDS
    host, _, pid = str(trial.user_attrs["worker"]).rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        return not _alive(int(pid))
    beat = trial.user_attrs.get("heartbeat") or (trial.datetime_start.timestamp() if trial.datetime_start else 0)
    return time.time() - beat > STALE_SECONDS


class Worker:
    """One process's share of a sweep: claim a waiting trial, train it, tell the study; until none waits."""

    def __init__(self, plan: Plan, stream: TextIO | None = None) -> None:
        import optuna
        self.plan = plan
        self.stream = stream if stream is not None else sys.stderr
        self.storage = open_storage(plan.storage)
        self.study = open_study(plan, self.storage)
        self.study_id = self.storage.get_study_id_from_name(plan.study)
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.states = optuna.trial.TrialState
        if plan.prune is not None:  # a pruner is not stored in the study: every worker makes the same one
            self.study.pruner = optuna.pruners.MedianPruner(n_startup_trials=plan.prune["startup"],
                                                            n_warmup_steps=plan.prune["warmup"])

    def trial_id(self, number: int) -> int:
        return self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)

    def trials(self, *states: Any) -> list[Any]:
        return retry(lambda: self.study.get_trials(deepcopy=False, states=states))

    def reap(self) -> None:
        """Fail each running trial whose worker is gone and enqueue it again (one worker wins each)."""
        import optuna
        for trial in self.trials(self.states.RUNNING):
            if not is_stale(trial):
                continue
            try:
                retry(lambda: self.storage.set_trial_state_values(self.trial_id(trial.number), self.states.FAIL))
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # another worker took it over first
            self.requeue({**trial.system_attrs.get("fixed_params", {}), **trial.params}, trial.user_attrs,
                         trial.number)

    def requeue(self, params: dict[str, Any], attrs: dict[str, Any], number: int) -> None:
        kept = {key: attrs[key] for key in ("slot", "seed", "expand") if key in attrs}
        retry(lambda: self.study.enqueue_trial(dict(params), user_attrs={**kept, "retry_of": number}))

    def claim(self) -> int | None:
        """The id of a waiting trial this worker moved to RUNNING, or ``None`` when none waits."""
        import optuna
        for trial in self.trials(self.states.WAITING):
            trial_id = self.trial_id(trial.number)
            try:
                if self.storage.set_trial_state_values(trial_id, self.states.RUNNING):
                    return trial_id
            except (optuna.exceptions.UpdateFinishedTrialError, optuna.exceptions.StorageInternalError):
                continue
        return None

    def run(self) -> int:
        """Work until no trial waits and none runs; returns how many this worker finished.

        With nothing to claim it waits for the trials other workers are running, so that every
        worker's report is whole, and takes over any whose worker dies meanwhile (reaped); a slot
        drawn elsewhere enqueues its other seeds while it runs.
        """
        done, waiting = 0, False
        while True:
            self.reap()
            trial_id = retry(self.claim)
            if trial_id is not None:
                self.run_trial(trial_id)
                done, waiting = done + 1, False
                continue
            running = self.trials(self.states.RUNNING)
            if not running:
                return done
            if not waiting:
                print(f"waiting for {len(running)} trial(s) other workers are running", file=self.stream, flush=True)
                waiting = True
            time.sleep(POLL_SECONDS)

    def expand(self, trial: Any, params: dict[str, Any]) -> None:
        """Enqueue the other seeds of a freshly drawn slot (those not already enqueued or run)."""
        slot = trial.user_attrs["slot"]
        present = {t.user_attrs.get("seed") for t in self.trials(self.states.WAITING, self.states.RUNNING,
                                                                  self.states.COMPLETE, self.states.PRUNED)
                   if t.user_attrs.get("slot") == slot}
        for seed in self.plan.seeds[1:]:
            if seed not in present:
                retry(lambda: self.study.enqueue_trial(params, user_attrs={"slot": slot, "seed": seed}))

    def run_trial(self, trial_id: int) -> None:
        import optuna
        frozen = retry(lambda: self.storage.get_trial(trial_id))
        attrs = frozen.user_attrs
        if attrs.get("expand"):  # a random/TPE slot: its own seeded sampler draws the setting
            self.study.sampler = sampler_for(self.plan, attrs["slot"])
        trial = optuna.trial.Trial(self.study, trial_id)
        params = {axis.key: axis.suggest(trial) for axis in self.plan.axes}
        seed = attrs["seed"]
        if attrs.get("expand"):
            self.expand(frozen, params)
        name = self.plan.run_name(params, seed)
        for key, value in (("worker", self.name), ("heartbeat", time.time()), ("run_dir", name)):
            retry(lambda: self.storage.set_trial_user_attr(trial_id, key, value))
        run_dir, overrides = self.plan.out / name, self.plan.overrides(params, seed)
        try:
            with Heartbeat(self.storage, trial_id):
                if self.plan.prune is None:
                    summary = train_or_continue(self.plan.recipe, run_dir, overrides)
                elif self.sibling_pruned(attrs["slot"]):
                    summary = None
                    retry(lambda: self.storage.set_trial_user_attr(trial_id, "skipped", "another seed was pruned"))
                else:
                    summary = train_pruned(self.plan.recipe, run_dir, overrides, trial, self.plan.metric)
            value = trial_value(run_dir, summary, self.plan.metric) if summary is not None else None
        except BaseException as error:
            if isinstance(error, NnlabError):
                retry(lambda: self.storage.set_trial_user_attr(trial_id, "error",
                                                               [type(error).__name__, str(error)]))
            retry(lambda: self.storage.set_trial_state_values(trial_id, self.states.FAIL))
            self.requeue(params, attrs, frozen.number)
            raise
        if summary is None:
            self.pruned(trial, trial_id, run_dir, params, seed)
            return
        from nnlab.commands.runs import headline
        test = headline(summary) or (None, None)
        for key, value_ in (("seconds", summary.get("train_seconds")), ("test_metric", test[0]),
                            ("test_value", test[1])):
            retry(lambda: self.storage.set_trial_user_attr(trial_id, key, value_))
        retry(lambda: self.study.tell(trial, value))
        self.say(f"{self.plan.label(params)} seed {seed}: {self.plan.metric} {value:.4f} "
                 f"({summary.get('train_seconds', 0):.1f}s)  {run_dir}")

    def say(self, line: str) -> None:
        finished = len(self.trials(self.states.COMPLETE, self.states.PRUNED))
        print(f"[{finished}/{self.plan.planned()}] {line}", file=self.stream, flush=True)

    def sibling_pruned(self, slot: int) -> bool:
        """Whether another seed of this setting was pruned (then this one is not worth training)."""
        return any(t.user_attrs.get("slot") == slot for t in self.trials(self.states.PRUNED))

    def pruned(self, trial: Any, trial_id: int, run_dir: Path, params: dict[str, Any], seed: int) -> None:
        """Tell the study the trial was pruned (its value: the last epoch's), with the seconds it trained."""
        from nnlab.commands.runs import read_metrics
        rows = read_metrics(run_dir / "metrics.jsonl")[0]
        seconds = sum(row.get("seconds", 0.0) for row in rows) if rows else None
        retry(lambda: self.storage.set_trial_user_attr(trial_id, "seconds", seconds))
        retry(lambda: self.study.tell(trial, state=self.states.PRUNED))
        frozen = retry(lambda: self.storage.get_trial(trial_id))
        how = (f"pruned after epoch {frozen.last_step} ({self.plan.metric} {frozen.value:.4f}, {seconds:.1f}s)"
               if frozen.last_step is not None else "pruned untrained (another seed of this setting was pruned)")
        self.say(f"{self.plan.label(params)} seed {seed}: {how}  {run_dir}")


@dataclass
class Heartbeat:
    """While the block runs, a thread stamps the trial's ``heartbeat`` every ``HEARTBEAT_SECONDS``."""

    storage: Any
    trial_id: int
    stop: threading.Event = field(default_factory=threading.Event)

    def _beat(self) -> None:
        while not self.stop.wait(HEARTBEAT_SECONDS):
            try:
                self.storage.set_trial_user_attr(self.trial_id, "heartbeat", time.time())
            except Exception:  # a busy database: the next beat will do; a stale mark takes minutes
                pass

    def __enter__(self) -> "Heartbeat":
        threading.Thread(target=self._beat, daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()


def train_or_continue(recipe: str, run_dir: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """Train one trial into ``run_dir``: its summary if an earlier attempt finished, the earlier attempt
    resumed from ``last.pt`` where its kind can, else a fresh run (a partial directory is cleared)."""
    import io
    from nnlab.kinds import get_kind
    from nnlab.kit.rundir import read_summary
    from nnlab.recipes import train
    summary = read_summary(run_dir)
    if summary is not None:
        return summary
    if (run_dir / "last.pt").is_file() and (run_dir / "config.json").is_file():
        from nnlab.config import load_config
        if get_kind(load_config(run_dir / "config.json").kind).supports("resume"):
            return train(None, resume=run_dir, stream=io.StringIO())
    if run_dir.exists():
        shutil.rmtree(run_dir)
    return train(recipe, out=run_dir, overrides=overrides, stream=io.StringIO())


def train_pruned(recipe: str, run_dir: Path, overrides: dict[str, Any], trial: Any,
                 metric: str) -> dict[str, Any] | None:
    """Train one trial an epoch at a time: the run kit stops it after the next epoch (``stop_after_epochs``,
    resumable), each epoch's ``metric`` in ``metrics.jsonl`` is reported to ``trial``, and the run is
    resumed from ``last.pt`` unless the study's pruner stops it. Returns the summary of the finished
    run, or ``None`` when it was pruned (the directory stays an interrupted run)."""
    import io
    from nnlab.commands.runs import read_metrics
    from nnlab.config import load_config
    from nnlab.kit.rundir import read_summary
    from nnlab.recipes import recipe_config, train
    reported: set[int] = set()
    while True:
        summary = read_summary(run_dir)
        resumable = (run_dir / "last.pt").is_file() and (run_dir / "config.json").is_file()
        rows = read_metrics(run_dir / "metrics.jsonl")[0] if resumable or summary is not None else []
        for epoch, row in enumerate(rows, 1):
            if epoch not in reported and isinstance(row.get(metric), (int, float)):
                trial.report(float(row[metric]), epoch)
                reported.add(epoch)
        if summary is not None:
            return summary
        if reported and trial.should_prune():
            return None
        # the last epoch runs without a stop, so a finished run's config.json is an ordinary run's
        epochs = load_config(run_dir / "config.json").epochs if rows else recipe_config(recipe, overrides).epochs
        stop = {"stop_after_epochs": len(rows) + 1} if len(rows) + 1 < epochs else {}
        if rows:
            train(None, resume=run_dir, overrides=stop, stream=io.StringIO())
        else:
            if run_dir.exists():
                shutil.rmtree(run_dir)
            train(recipe, out=run_dir, overrides={**overrides, **stop}, stream=io.StringIO())


def trial_value(run_dir: Path, summary: dict[str, Any], metric: str) -> float:
    """The run's ``metric`` at its best epoch (``best_<metric>`` where it monitored that metric, else the
    best epoch's row of ``metrics.jsonl``, else the summary's own value)."""
    from nnlab.commands.runs import read_metrics
    if summary.get("monitor") == metric and isinstance(summary.get(f"best_{metric}"), (int, float)):
        return float(summary[f"best_{metric}"])
    rows = read_metrics(run_dir / "metrics.jsonl")[0]
    epoch = summary.get("best_epoch") or len(rows)
    row = rows[epoch - 1] if 0 < epoch <= len(rows) else {}
    for source in (row, summary):
        if isinstance(source.get(metric), (int, float)) and not isinstance(source.get(metric), bool):
            return float(source[metric])
    known = sorted({k for k, v in {**row, **summary}.items() if k.startswith(("valid_", "train_"))
                    and isinstance(v, (int, float))})
    raise ConfigError(f"--metric {metric}: the run {run_dir} has no such value; it has: {', '.join(known)}")


def _worker_process(plan: Plan, threads: int) -> None:
    """A spawned worker: its share of the torch threads, quiet on a user error (the study holds it)."""
    import torch
    torch.set_num_threads(threads)
    try:
        Worker(plan).run()
    except NnlabError:
        raise SystemExit(2)
    except KeyboardInterrupt:
        raise SystemExit(130)


def run_workers(plan: Plan, workers: int, stream: TextIO | None = None) -> None:
    """Work on the plan's study here (``workers`` 1) or in ``workers`` spawned processes on this machine."""
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    if workers == 1:
        Worker(plan, stream).run()
        return
    import multiprocessing
    context = multiprocessing.get_context("spawn")  # fresh interpreters: no forked torch thread pools
    threads = max(1, (os.cpu_count() or 1) // workers)
    processes = [context.Process(target=_worker_process, args=(plan, threads)) for _ in range(workers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    codes = [process.exitcode for process in processes]
    if any(codes):
        raise_worker_error(plan, codes)


def raise_worker_error(plan: Plan, codes: list[int | None]) -> None:
    """The user error a worker recorded in the study (as its own type), or a ``RuntimeError``."""
    import optuna
    study = optuna.load_study(study_name=plan.study, storage=open_storage(plan.storage))
    failed = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))
              if t.user_attrs.get("error")]
    if failed:
        kind, message = failed[-1].user_attrs["error"]
        raise getattr(errors, kind, ConfigError)(message)
    raise RuntimeError(f"sweep workers exited with codes {codes} (their tracebacks are above)")
