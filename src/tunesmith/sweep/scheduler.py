"""The local scheduler: each trial is a `tunesmith finetune` process, `parallel` at a time.

It reads each running trial's metrics.jsonl at every look (`poll` seconds), gives ASHA the
evaluations at its rungs, and stops a trial ASHA cuts with SIGTERM (the trial's run ends
`interrupted`, its checkpoints kept). Ctrl-C or SIGTERM to the sweep stops its trials the same
way and leaves them resumable.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from tunesmith.runs import Workspace
from tunesmith.runs.record import PARENT_ENV
from tunesmith.sweep.asha import Asha
from tunesmith.sweep.config import SweepConfig
from tunesmith.sweep.trials import (
    FINISHED,
    SweepState,
    Trial,
    has_checkpoint,
    read_progress,
    trial_argv,
)

TRIAL_LOGS = "trials"
STOP_WAIT_S = 60.0  # a trial writes its last checkpoint when stopped


@dataclass
class _Running:
    trial: Trial
    process: subprocess.Popen
    known_runs: int  # how many runs the trial had when this process started
    stop_note: str = ""


class LocalScheduler:
    def __init__(
        self,
        state: SweepState,
        config: SweepConfig,
        workspace: Workspace,
        sweep_id: int | None,
        folder: Path,
        out: TextIO,
    ):
        self.state, self.config, self.workspace = state, config, workspace
        self.sweep_id, self.folder, self.out = sweep_id, folder, out
        self.parallel = config.parallel or 1
        self.asha: Asha | None = None
        self.running: list[_Running] = []
        for trial in state.trials:  # resumed: the rungs as the finished trials left them
            if trial.status in FINISHED:
                self._report(trial)

    def run(self) -> None:
        pending = [t for t in self.state.trials if t.status not in FINISHED]
        # ASHA never cuts the first trials at a rung: in grid order (e.g. the smallest learning
        # rates first) the poor ones would all come first and all run to the end.
        random.Random(self.config.sweep_seed).shuffle(pending)
        try:
            while pending or self.running:
                while pending and len(self.running) < self.parallel:
                    self._start(pending.pop(0))
                time.sleep(self.config.poll)
                for item in list(self.running):
                    self._look(item)
                self.state.save(self.folder)
        except KeyboardInterrupt:
            for item in self.running:
                self._stop(item, "")
            for item in self.running:
                self._wait(item)
                item.trial.status = "interrupted"
            self.state.save(self.folder)
            raise

    def _start(self, trial: Trial) -> None:
        resumed = trial.run is not None and has_checkpoint(self.workspace.run_dir(trial.run))
        argv = trial_argv(self.state.command, trial, resumed)
        command = [sys.executable, "-m", "tunesmith", *argv]
        if "--num-threads" not in self.state.command:
            cores = os.cpu_count() or 1
            command += ["--num-threads", str(max(1, cores // self.parallel))]
        command += ["--name", self.trial_name(trial), "--workspace", str(self.workspace.root)]
        env = dict(os.environ)
        if self.sweep_id is not None:
            env[PARENT_ENV] = str(self.sweep_id)
        logs = self.folder / TRIAL_LOGS
        logs.mkdir(exist_ok=True)
        with open(logs / f"{trial.name}.log", "a", encoding="utf-8") as log:
            process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        trial.status = "running"
        self.running.append(_Running(trial, process, len(trial.runs)))
        values = " ".join(f"{k}={v}" for k, v in trial.params.items())
        again = f" (resumed from runs/{trial.run})" if resumed else ""
        print(f"trial {trial.name} started{again}: {values}", file=self.out, flush=True)

    def trial_name(self, trial: Trial) -> str:
        return self.state.run_name(trial)

    def _look(self, item: _Running) -> None:
        trial = item.trial
        self._find_run(item)
        if trial.run is not None:
            records = self.workspace.records_dir(trial.run) / "metrics.jsonl"
            trial.curve, trial.trained = read_progress(records, self.config.metric)
            cut = self._report(trial)
            if cut and not item.stop_note and item.process.poll() is None:
                self._stop(item, cut)
        if item.process.poll() is not None:
            self._find_run(item)
            self._finish(item)

    def _report(self, trial: Trial) -> str:
        """Give ASHA the trial's evaluations; the reason it stops, or ""."""
        if not self.config.asha:
            return ""
        for step, value in trial.curve:
            if step <= 0:
                continue
            if self.asha is None:  # rungs start at the first evaluation unless --grace
                grace = self.config.grace or step
                self.asha = Asha(grace, self.config.eta, self.config.mode)
            cut = self.asha.report(trial.name, step, value)
            if cut:
                return cut.describe(self.config.metric, self.config.mode)
        return ""

    def _find_run(self, item: _Running) -> None:
        if len(item.trial.runs) > item.known_runs:
            return
        run = self.workspace.latest(name=self.trial_name(item.trial))
        if run is not None and run.id not in item.trial.runs:
            item.trial.runs.append(run.id)

    def _stop(self, item: _Running, note: str) -> None:
        item.stop_note = note
        if item.process.poll() is None:
            item.process.send_signal(signal.SIGTERM)

    def _wait(self, item: _Running) -> None:
        try:
            item.process.wait(timeout=STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            item.process.kill()
            item.process.wait()

    def _finish(self, item: _Running) -> None:
        self.running.remove(item)
        trial, code = item.trial, item.process.returncode
        run = self.workspace.get(trial.run) if len(trial.runs) > item.known_runs else None
        if item.stop_note:
            trial.status, trial.note = "stopped", item.stop_note
        elif run is not None and run.status == "succeeded":
            trial.status, trial.note = "succeeded", ""
        else:
            why = run.error if run is not None and run.error else f"exit code {code}"
            trial.status = "failed"
            trial.note = f"{why} (see {TRIAL_LOGS}/{trial.name}.log)"
        best = trial.best(self.config.mode)
        shown = f", best {self.config.metric} {best:.4f}" if best is not None else ""
        note = f": {trial.note}" if trial.note else ""
        print(f"trial {trial.name} {trial.status}{shown}{note}", file=self.out, flush=True)
