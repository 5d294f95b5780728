"""`SweepConfig`: how a sweep searches (its own flags; the ranges and the finetune command are
given beside it, see `space.py`)."""

from __future__ import annotations

from dataclasses import dataclass

from tunesmith.cluster.config import ClusterConfig
from tunesmith.errors import UsageError
from tunesmith.options import option

MODES = ("min", "max")


@dataclass(frozen=True)
class SweepConfig:
    """A sweep's search settings; validated on construction, saved with the sweep run."""

    random: int | None = option(
        None,
        "sample N trials from the ranges (a:b uniform, a:b:log log-uniform) instead of a grid",
        metavar="N",
    )
    metric: str = option("val_loss", "the validation metric trials are compared on")
    mode: str = option("min", "whether a lower or higher --metric is better", choices=MODES)
    parallel: int | None = option(
        None,
        "trials running at once",
        metavar="K",
        default_help="1 here; on a cluster, as many as its resources hold",
    )
    asha: bool = option(True, "run every trial to the end (no early stopping by ASHA)")
    eta: int = option(3, "ASHA: keep the best 1/eta of the trials at each rung")
    grace: int | None = option(
        None,
        "ASHA: steps before the first rung; rungs follow at grace*eta^k",
        default_help="the first evaluation",
    )
    sweep_seed: int = option(0, "random seed for --random")
    resume: str | None = option(
        None, "continue an interrupted sweep (runs/N): finished trials are kept", metavar="RUN"
    )
    cluster: str | None = option(
        None,
        "run the trials on this Ray cluster, scheduled by Ray Tune (HOST:PORT; `local`: here)",
        metavar="ADDRESS",
        default_help="$TUNESMITH_CLUSTER, then $RAY_ADDRESS, else this machine",
    )
    gpus_per_trial: float | None = option(
        None, "GPUs each trial holds on the cluster", metavar="N", default_help="0"
    )
    cpus_per_trial: float | None = option(
        None, "CPUs each trial holds on the cluster", metavar="N", default_help="1"
    )
    poll: float = option(0.5, "seconds between looks at running trials' metrics", cli=False)

    def __post_init__(self) -> None:
        if self.random is not None and self.random < 1:
            raise UsageError(f"--random {self.random}: give the number of trials (at least 1)")
        if self.parallel is not None and self.parallel < 1:
            raise UsageError(f"--parallel {self.parallel}: give how many trials at once (>= 1)")
        if self.eta < 2:
            raise UsageError(f"--eta {self.eta}: ASHA keeps 1/eta of the trials; use 2 or more")
        if self.grace is not None and self.grace < 1:
            raise UsageError(f"--grace {self.grace}: give a number of steps (>= 1)")
        if self.mode not in MODES:
            raise UsageError(f"--mode {self.mode!r}: use min or max")
        per_trial = {
            "--gpus-per-trial": self.gpus_per_trial,
            "--cpus-per-trial": self.cpus_per_trial,
        }
        given = [flag for flag, value in per_trial.items() if value is not None]
        if given and self.address is None:
            raise UsageError(
                f"{', '.join(given)} only apply to a cluster sweep: add --cluster ADDRESS"
            )
        if any(value < 0 for value in per_trial.values() if value is not None):
            raise UsageError("--gpus-per-trial and --cpus-per-trial cannot be negative")

    @property
    def address(self) -> str | None:
        """The cluster the trials run on (the flag, then the environment); None for here."""
        return ClusterConfig(cluster=self.cluster).address

    def trial_resources(self) -> ClusterConfig:
        """What each trial holds on the cluster, as a remote run's request."""
        return ClusterConfig(
            cluster=self.cluster,
            gpus=self.gpus_per_trial or 0.0,
            cpus=1.0 if self.cpus_per_trial is None else self.cpus_per_trial,
        )

    def better(self, a: float, b: float) -> bool:
        """Whether metric value `a` is better than `b`."""
        return a < b if self.mode == "min" else a > b
