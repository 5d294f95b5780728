"""Trials on a Ray cluster, scheduled by Ray Tune (`tunesmith sweep --cluster ADDRESS`).

    this process (the driver)                      the cluster
    ─────────────────────────                      ───────────
    Tuner: a Tune trial per sweep trial      ──▶   `trainable`, on the node Tune placed it,
      (param_space: the trial's index, so          holding --cpus/--gpus-per-trial: creates
      grid and --random mean what they do          the trial's RemoteJob actor (named by the
      here), Tune's ASHAScheduler or FIFO          driver) pinned to its node with 0 resources
                                                   and its GPUs, then reports each evaluation
    _Driver (a Tune Callback, in the driver's      of --metric in the job's metrics to Tune
      loop): once a trial's actor exists,          (time_attr: the training step)
      records the trial's run here, sends its
      inputs, starts the job, then copies its log, metrics and checkpoints like any remote
      run (cluster.session.Remote); when Tune ends the trial it records the run, first
      stopping the job (SIGTERM: it ends `interrupted`, checkpoints kept) if ASHA stopped it.

Tune's own experiment folder is a temporary directory here, removed at the end: the trials give
Tune no checkpoints (tunesmith copies them), so it needs no storage shared by the nodes.
`trial_job.py` holds the trainable; `tune_setup.py` builds the Tuner and sets Tune's switches.
"""

from __future__ import annotations

import random
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import ray
from ray import tune
from ray.tune.progress_reporter import TrialProgressCallback

from tunesmith.cluster.client import STOP_GRACE, actor_death, fail_here, stop, sync
from tunesmith.cluster.connect import NAMESPACE, ClusterError, check_feasible, connect
from tunesmith.cluster.launch import (
    collect_inputs,
    create_run,
    job_name,
    log_line,
    record_job,
    start_in,
)
from tunesmith.cluster.session import PULL_EVERY, Remote
from tunesmith.runs import Workspace
from tunesmith.runs.record import Terminated, sigterm_as_interrupt
from tunesmith.sweep.config import SweepConfig
from tunesmith.sweep.trial_job import trainable
from tunesmith.sweep.trials import (
    FINISHED,
    SweepState,
    Trial,
    has_checkpoint,
    read_progress,
    trial_argv,
)
from tunesmith.sweep.tune_setup import error_line, make_tuner, tune_settings

KILL_AFTER = 10.0  # seconds after SIGTERM before a stopped job is killed
_ASK = object()  # `_finish`: ask the job's actor for its result


@dataclass
class _Job:
    """A trial's remote run, followed from the driver."""

    trial: Trial
    remote: Remote
    stop_note: str = ""  # why ASHA stopped it
    failure: str = ""  # why its Tune trial failed while the job ran
    stop_by: float | None = None  # after a stop: when to give up waiting for its end
    tune_ended: bool = False
    finished: bool = False
    last_pull: float = 0.0


class _Driver(TrialProgressCallback):
    """Tune's events, in the driver's loop, passed to the scheduler. A TrialProgressCallback
    whose hooks print nothing, so that Tune adds no printing one of its own: the sweep prints
    each trial's start and end."""

    def __init__(self, scheduler: TuneScheduler):
        super().__init__()
        self.scheduler = scheduler

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its settings for a restore that tunesmith never asks of it (a resumed
        # sweep starts a new Tuner); the scheduler, with its open run store, stays here.
        return {}

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self.scheduler.look([t.config["trial"] for t in trials if t.status == "RUNNING"])

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        if result.get("done"):  # Tune marks the result its scheduler (ASHA) stopped it at
            self.scheduler.cut(trial.config["trial"], result)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.scheduler.ended(trial.config["trial"], trial.last_result)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.scheduler.ended(trial.config["trial"], trial.last_result, error_line(trial))


class TuneScheduler:
    """Runs a sweep's unfinished trials on the cluster `config.address` through Ray Tune."""

    def __init__(
        self,
        state: SweepState,
        config: SweepConfig,
        grace: int | None,
        workspace: Workspace,
        sweep_id: int | None,
        folder: Path,
        out: TextIO,
    ):
        self.state, self.config, self.grace, self.workspace = state, config, grace, workspace
        self.sweep_id, self.folder, self.out = sweep_id, folder, out
        self.resources = config.trial_resources()
        self.jobs: dict[int, str] = {}  # trial index -> its job's actor name
        self.following: dict[int, _Job] = {}
        self.interrupted = False  # by Ctrl-C or SIGTERM

    def run(self) -> None:
        connect(self.resources.address)
        check_feasible(ray, self.resources.resources())
        for trial in self.state.trials:  # resumed: runs a killed sweep left on the cluster
            if trial.status not in FINISHED and trial.run is not None:
                self._settle(trial)
        pending = [t for t in self.state.trials if t.status not in FINISHED]
        # Tune starts grid trials in order: the local scheduler's shuffled order (see there).
        random.Random(self.config.sweep_seed).shuffle(pending)
        self.jobs = {t.index: job_name() for t in pending}
        storage = Path(tempfile.mkdtemp(prefix="tunesmith-tune-"))
        # After connecting: Ray's driver turns SIGTERM into an exit, which would leave the
        # trials' jobs running unrecorded.
        with sigterm_as_interrupt() as sigterm, tune_settings():
            try:
                if pending:
                    indices = [t.index for t in pending]
                    fn = tune.with_parameters(
                        trainable, jobs=self.jobs, metric=self.config.metric, poll=self.config.poll
                    )
                    make_tuner(fn, self.config, self.grace, indices, _Driver(self), storage).fit()
                self._drain()
            except KeyboardInterrupt as e:
                self._interrupt()
                if sigterm and not isinstance(e, Terminated):  # Ray's get() called it Ctrl-C
                    raise Terminated() from None
                raise
            finally:
                self.state.save(self.folder)
                shutil.rmtree(storage, ignore_errors=True)

    def _settle(self, trial: Trial) -> None:
        """A trial's last run as it stands now: a remote one still running is stopped (it
        continues from its checkpoints), one that ended meanwhile is recorded."""
        run = self.workspace.get(trial.run)
        if run.status == "running" and run.info.get("cluster", {}).get("job"):
            if sync(self.workspace, run.id) == "running":
                stop(self.workspace, run.id)
        if self.workspace.get(trial.run).status == "succeeded":
            trial.status, trial.note = "succeeded", ""
            trial.curve, trial.trained = self._progress(trial)

    # -- Tune's events -------------------------------------------------------------------

    def look(self, running: list[int]) -> None:
        """Start the jobs of trials whose actor now exists; copy what every job made."""
        for index in running:
            if index not in self.following and self.state.trials[index].status not in FINISHED:
                self._launch(index)
        for job in list(self.following.values()):
            if not job.finished:
                self._follow(job)
        self.state.save(self.folder)

    def cut(self, index: int, result: dict[str, Any]) -> None:
        """ASHA stopped trial `index` at `result`: recorded as its reason, however its job
        ends (it may end on its own before the stop reaches it)."""
        job = self.following.get(index)
        if job is not None and not job.finished:
            job.stop_note = _cut_note(result, self.config.metric)

    def ended(self, index: int, last: dict[str, Any], error: str | None = None) -> None:
        """Tune ended trial `index`: once its job ended, or when ASHA stopped it (or, with
        `error`, the trial failed) while the job still runs: then stop the job first."""
        trial, job = self.state.trials[index], self.following.get(index)
        if job is None:
            if trial.status not in FINISHED:  # its trainable failed before the job started
                trial.status = "failed"
                trial.note = f"its Ray Tune trial failed before the job started: {error}"
                self._announce(trial)
            return
        job.tune_ended = True
        if job.finished:
            return
        if self._follow(job) or job.finished:
            return
        if error:
            job.failure = f"its Ray Tune trial failed: {error}"
        elif not job.stop_note:
            job.stop_note = _cut_note(last, self.config.metric)
        self._stop(job)

    # -- one trial -----------------------------------------------------------------------

    def _launch(self, index: int) -> None:
        try:
            actor = ray.get_actor(self.jobs[index], namespace=NAMESPACE)
        except ValueError:
            return  # its trainable has not created it yet
        trial = self.state.trials[index]
        resumed = trial.run is not None and has_checkpoint(self.workspace.run_dir(trial.run))
        argv = trial_argv(self.state.command, trial, resumed)
        if "--num-threads" not in self.state.command:  # the cores the trial holds
            argv += ["--num-threads", str(max(1, int(self.resources.cpus)))]
        argv_here = ["tunesmith", *argv, "--cluster", str(self.config.address)]
        name = self.state.run_name(trial)
        run_id = create_run(
            self.workspace, "finetune", argv_here, self.config.address, name, self.sweep_id
        )
        trial.runs.append(run_id)
        trial.status = "running"
        log_line(self.workspace, run_id, f"run {run_id}", echo=False)
        try:
            found = collect_inputs(self.workspace, run_id, argv)
            cluster = start_in(
                ray, actor, self.jobs[index], self.workspace, found, self.resources, KILL_AFTER
            )
        except BaseException as e:
            ray.kill(actor)  # detached: it would otherwise stay on the node for good
            self._not_started(trial, run_id, e)
            if not isinstance(e, Exception):
                raise
            return
        record_job(self.workspace, run_id, cluster, echo=False)
        self.following[index] = _Job(trial, Remote(self.workspace, run_id))
        again = f" (resumed from runs/{trial.runs[-2]})" if resumed else ""
        values = " ".join(f"{k}={v}" for k, v in trial.params.items())
        where = f"{cluster['node']} ({cluster['device']})"
        print(
            f"trial {trial.name} started{again} as runs/{run_id} on {where}: {values}",
            file=self.out,
            flush=True,
        )

    def _not_started(self, trial: Trial, run_id: int, error: BaseException) -> None:
        try:
            fail_here(self.workspace, run_id, error)
        except ClusterError:
            pass  # recorded; the sweep goes on with the other trials
        run = self.workspace.get(run_id)
        interrupted = isinstance(error, KeyboardInterrupt)
        trial.status = "interrupted" if interrupted else "failed"
        trial.note = "" if interrupted else f"{run.error} (the job did not start)"
        self._announce(trial)

    def _follow(self, job: _Job) -> bool:
        """Copy what is new; record the run once its job and its Tune trial have ended.
        Whether the job has ended."""
        try:
            done = job.remote.step(echo=False)
            if not done and time.monotonic() - job.last_pull >= PULL_EVERY:
                job.remote.pull_finished()
                job.last_pull = time.monotonic()
        except ray.exceptions.RayActorError as e:
            self._finish(job, None, actor_death(e))
            return True
        job.trial.curve, job.trial.trained = self._progress(job.trial)
        if done and job.tune_ended:
            self._finish(job)
        elif job.stop_by is not None and time.monotonic() > job.stop_by:
            self._finish(job, None, "stopped; the job did not record its end in time")
        return done

    def _stop(self, job: _Job) -> None:
        try:
            job.remote.stop()
        except ray.exceptions.RayActorError as e:
            self._finish(job, None, actor_death(e))
            return
        job.stop_by = time.monotonic() + STOP_GRACE

    def _finish(self, job: _Job, result: Any = _ASK, reason: str | None = None) -> None:
        if result is _ASK:
            try:
                result = ray.get(job.remote.actor.result.remote())
            except ray.exceptions.RayActorError as e:
                result, reason = None, actor_death(e)
        job.remote.finish(result, reason, echo=False)
        job.finished = True
        trial = job.trial
        trial.curve, trial.trained = self._progress(trial)
        trial.status, trial.note = self._verdict(job)
        self._announce(trial)

    def _verdict(self, job: _Job) -> tuple[str, str]:
        """The trial's status and note once its run is recorded."""
        run = self.workspace.get(job.trial.run)
        if job.stop_note:
            return "stopped", job.stop_note
        if run.status == "succeeded":
            return "succeeded", ""
        if job.failure:
            return "failed", job.failure
        if self.interrupted:  # resumable: `--resume` continues it from its checkpoints
            return "interrupted", ""
        why = run.error or f"exit code {run.exit_code}"
        return "failed", f"{why} (see `tunesmith logs {run.id}`)"

    def _progress(self, trial: Trial) -> tuple[list[tuple[int, float]], int]:
        records = self.workspace.records_dir(trial.run) / "metrics.jsonl"
        return read_progress(records, self.config.metric)

    def _announce(self, trial: Trial) -> None:
        best = trial.best(self.config.mode)
        shown = f", best {self.config.metric} {best:.4f}" if best is not None else ""
        note = f": {trial.note}" if trial.note else ""
        print(f"trial {trial.name} {trial.status}{shown}{note}", file=self.out, flush=True)

    # -- the end -------------------------------------------------------------------------

    def _drain(self) -> None:
        """Tune is done: wait for the jobs still stopping, and record them."""
        for job in self.following.values():
            job.tune_ended = True
        while any(not job.finished for job in self.following.values()):
            for job in self.following.values():
                if not job.finished:
                    self._follow(job)
            time.sleep(self.config.poll)

    def _interrupt(self) -> None:
        """Ctrl-C or SIGTERM: stop every running job (each run ends `interrupted`, checkpoints
        kept, so `--resume` continues it); trials not started stay pending."""
        self.interrupted = True
        for index, name in self.jobs.items():
            if index not in self.following:
                _kill_named(name)
        for job in self.following.values():
            if not job.finished and job.stop_by is None:
                self._stop(job)
        self._drain()


def _kill_named(name: str) -> None:
    """Kill a trial's job actor that its trainable created but the driver never started."""
    try:
        ray.kill(ray.get_actor(name, namespace=NAMESPACE))
    except (ValueError, ray.exceptions.RayError):
        pass


def _cut_note(last: dict[str, Any], metric: str) -> str:
    """Why ASHA stopped a trial: its last evaluation, as Tune's scheduler saw it."""
    step, value = last.get("step"), last.get(metric)
    if not isinstance(value, (int, float)):
        return "stopped by ASHA (Ray Tune)"
    return f"stopped by ASHA (Ray Tune) at step {step}: {metric} {value:.4f}, below its rung's cut"
