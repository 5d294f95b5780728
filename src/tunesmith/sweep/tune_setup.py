"""The Ray Tune experiment of a cluster sweep (see `tune.py`): its Tuner, and Tune's settings
while it runs."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from tunesmith.sweep.config import SweepConfig

MAX_T = 10**9  # ASHA's last rung: never reached, a trial trains the steps its command gives
TUNE_ENV = {
    "TUNE_DISABLE_SIGINT_HANDLER": "1",
    "RAY_AIR_NEW_OUTPUT": "0",  # with verbose=0: no tables, no "View detailed results here"
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",  # no CSV/JSON/TensorBoard result files
}


def make_tuner(
    fn: Any,
    config: SweepConfig,
    grace: int | None,
    trials: list[int],
    callback: tune.Callback,
    storage: Path,
) -> tune.Tuner:
    """A Tune trial of `fn` for each sweep trial index in `trials`, in that order, each holding
    the sweep's per-trial resources; ASHA (on the training step) unless --no-asha."""
    resources = config.trial_resources()
    fn = tune.with_resources(fn, {"cpu": resources.cpus, "gpu": resources.gpus})
    if config.asha:
        scheduler = ASHAScheduler(
            time_attr="step",
            metric=config.metric,
            mode=config.mode,
            max_t=MAX_T,
            grace_period=grace,
            reduction_factor=config.eta,
        )
    else:
        scheduler = FIFOScheduler()
    return tune.Tuner(
        fn,
        param_space={"trial": tune.grid_search(trials)},
        tune_config=tune.TuneConfig(
            scheduler=scheduler, max_concurrent_trials=config.parallel, reuse_actors=False
        ),
        run_config=tune.RunConfig(
            name="sweep", storage_path=str(storage), verbose=0, callbacks=[callback]
        ),
    )


def error_line(trial: Any) -> str:
    """The last line of a failed Tune trial's error (its file lies in Tune's folder here)."""
    try:
        text = Path(trial.error_file).read_text(encoding="utf-8", errors="replace")
    except (OSError, TypeError):
        return "see the cluster's logs"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "see the cluster's logs"


@contextmanager
def tune_settings() -> Iterator[None]:
    """Ray Tune's switches while it runs for tunesmith: Ctrl-C reaches the scheduler as
    KeyboardInterrupt (Tune's own handler would end quietly, the jobs left running), and Tune
    prints and logs nothing of its own: the sweep prints and records each trial."""
    saved = {name: os.environ.get(name) for name in TUNE_ENV}
    os.environ.update(TUNE_ENV)
    loggers = [logging.getLogger(name) for name in ("ray.tune", "ray.air", "ray.train")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
