"""Hyperparameter sweeps: `tunesmith sweep` runs finetune trials over a search space, stops poor
ones early (ASHA), and names the best trial's model as its own main output.

`space.py` (ranges on finetune options) → `scheduler.py` (local trial processes, with
`asha.py`), or with `--cluster` `tune.py` (remote runs scheduled by Ray Tune, whose trials
`trial_job.py` runs on the nodes; Ray is imported on that path only) → `results.py` (table
and plots); `trials.py` keeps the state a resume needs; `api.py` ties them into one run.
"""

from tunesmith.sweep.api import (
    SweepResult,
    check_cluster,
    check_command,
    state_reference,
    sweep,
)
from tunesmith.sweep.config import SweepConfig
from tunesmith.sweep.space import Option, SearchSpace

__all__ = [
    "Option",
    "SearchSpace",
    "SweepConfig",
    "SweepResult",
    "check_cluster",
    "check_command",
    "state_reference",
    "sweep",
]
