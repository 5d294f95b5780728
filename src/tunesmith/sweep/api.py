"""`sweep`: run a search as one recorded run whose trials are finetune runs.

    with recorded_run("sweep", ...) as run:
        result = sweep(config, space, ["finetune", "--data", "runs/1", ...], run)

The sweep's folder holds `sweep.json` (settings, trials, their runs), the trials' console logs,
the results table and plots; `runs/SWEEP` names the best trial's model.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO

from tunesmith.cluster.connect import require_ray
from tunesmith.errors import UsageError
from tunesmith.runs import RunHandle, is_run_reference, parse_reference
from tunesmith.sweep.config import SweepConfig
from tunesmith.sweep.results import best_trial, write_results
from tunesmith.sweep.scheduler import LocalScheduler
from tunesmith.sweep.space import SearchSpace
from tunesmith.sweep.trials import FINISHED, STATE_FILE, SweepState, Trial, first_evaluation

# Settings a resumed sweep takes from its own command, not the sweep it continues.
MACHINE_SETTINGS = ("parallel", "cluster", "gpus_per_trial", "cpus_per_trial")
# Set by the sweep for every trial, so a trial command cannot choose them.
RESERVED = ("--name", "--workspace", "--resume", "--no-run", "--output-dir")


@dataclass(frozen=True)
class SweepResult:
    trials: list[Trial]
    best: Trial | None
    table: str


def check_command(command: list[str], space: SearchSpace) -> list[str]:
    """The trial command after `--`: `finetune ARGS`, without the flags the sweep sets."""
    if not command or command[0] != "finetune":
        raise UsageError("give the trials' command after --, e.g. `-- finetune --data runs/1`")
    for flag in (*RESERVED, *(d.option.flag for d in space.dimensions)):
        if any(arg == flag or arg.startswith(flag + "=") for arg in command[1:]):
            raise UsageError(
                f"{flag} is set by the sweep for each trial; leave it out of the command"
            )
    return list(command)


def new_state(
    config: SweepConfig, space: SearchSpace, command: list[str], run: RunHandle
) -> SweepState:
    trials = [Trial(i, p) for i, p in enumerate(space.trials(config.random, config.sweep_seed))]
    settings = asdict(config) | {"trial_prefix": f"sweep{run.id}" if run.id else "sweep"}
    return SweepState(settings, space.to_dict(), check_command(command, space), trials)


def state_reference(ref: str) -> str:
    """The reference to the state file of the sweep `ref` names (`runs/N` of a finished sweep
    names its best trial's model, not the sweep's folder)."""
    if not is_run_reference(ref) or parse_reference(ref).subpath:
        raise UsageError(f"--resume {ref}: give the sweep as runs/N or runs/NAME")
    return f"{ref.rstrip('/')}/{STATE_FILE}"


def resumed_state(config: SweepConfig, run: RunHandle) -> tuple[SweepState, SweepConfig]:
    """The state of the sweep `config.resume` names, and its settings (ours for the machine:
    --parallel and where the trials run)."""
    assert config.resume is not None
    path = Path(run.use(state_reference(config.resume), allow_unfinished=True))
    state = SweepState.load(path.parent, config.resume)
    settings = {k: v for k, v in state.settings.items() if k != "trial_prefix"}
    settings.update({k: getattr(config, k) for k in (*MACHINE_SETTINGS, "resume")})
    resumed = SweepConfig(**settings)
    for trial in state.trials:
        if trial.status in ("running", "interrupted"):
            trial.status = "interrupted"
    return state, resumed


def sweep(
    config: SweepConfig,
    space: SearchSpace | None,
    command: list[str],
    run: RunHandle,
    out: TextIO | None = None,
) -> SweepResult:
    """Run (or with `config.resume`, continue) a sweep inside `run`; progress goes to `out`
    (default: stdout as it is then, which a recorded run copies into its log)."""
    out = out or sys.stdout
    if config.resume:
        state, config = resumed_state(config, run)
    else:
        assert space is not None
        state = new_state(config, space, command, run)
    state.save(run.dir)
    kept = sum(t.status in FINISHED for t in state.trials)
    kept_note = f" ({kept} kept from {config.resume})" if kept else ""
    print(f"sweep: {len(state.trials)} trials{kept_note}, {_where(config)}", file=out, flush=True)
    if config.address is None:
        scheduler = LocalScheduler(state, config, run.workspace, run.id, run.dir, out)
    else:  # Ray only on this path: a sweep here never imports it
        from tunesmith.sweep.tune import TuneScheduler

        grace = check_cluster(config, state.command, state.trials)
        scheduler = TuneScheduler(state, config, grace, run.workspace, run.id, run.dir, out)
    try:
        scheduler.run()
    finally:
        table = write_results(run.dir, state.trials, config.metric, config.mode)
    best = best_trial(state.trials, config.mode)
    _record(run, state, config, best)
    return SweepResult(state.trials, best, table)


def check_cluster(config: SweepConfig, command: list[str], trials: list[Trial]) -> int | None:
    """Whether a sweep can run on the cluster (Ray is installed); ASHA's grace in steps, which
    Ray Tune's scheduler needs before any trial starts: --grace, else the first evaluation
    when the command fixes it (--eval-every), else 1. Tune's ASHA counts an evaluation at the
    highest rung it has passed (rungs at grace, grace*eta, ...), so rungs from step 1 on work
    with evaluations at each epoch's end, whose step is known only once a trial has its data."""
    require_ray()
    if not config.asha or config.grace is not None:
        return config.grace
    return first_evaluation(command, trials) or 1


def _where(config: SweepConfig) -> str:
    goal = f"{config.mode} {config.metric}"
    if config.address is None:
        return f"{config.parallel or 1} at a time, {goal}"
    limit = f" (at most {config.parallel} at once)" if config.parallel else ""
    return f"on the Ray cluster at {config.address} through Ray Tune{limit}, {goal}"


def _record(run: RunHandle, state: SweepState, config: SweepConfig, best: Trial | None) -> None:
    for trial in state.trials:
        value = trial.best(config.mode)
        if value is not None:
            run.log_metrics({config.metric: value, "trial": trial.index}, step=trial.steps)
    stopped = sum(t.status == "stopped" for t in state.trials)
    if best is None:
        run.set_summary(f"{len(state.trials)} trials, none succeeded")
        return
    value = best.best(config.mode)
    run.final_metrics.update(
        {f"best_{config.metric}": value, "trials": len(state.trials), "stopped": stopped}
    )
    run.set_main_output(f"runs/{best.run}/model")
    params = " ".join(f"{k}={v}" for k, v in best.params.items())
    run.set_summary(f"best {best.name} ({params}): {config.metric} {value:.4f}")
