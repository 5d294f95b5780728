"""ASHA (asynchronous successive halving, Li et al. 2018), as Ray Tune's ASHAScheduler does it.

Rungs sit at steps grace, grace*eta, grace*eta^2, ... When a trial's validation metric at a rung
is known, it is compared with the values every trial reached at that rung so far: a trial worse
than the best 1/eta of them is stopped. Nothing waits for other trials (the "asynchronous"),
so the first trials at a rung always go on, and later ones are held to the bar they set.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Cut:
    """Why a trial was stopped."""

    step: int
    value: float
    cutoff: float

    def describe(self, metric: str, mode: str) -> str:
        worse = ">" if mode == "min" else "<"
        return (
            f"stopped by ASHA at step {self.step}: {metric} {self.value:.4f} {worse} "
            f"rung cut {self.cutoff:.4f}"
        )


@dataclass
class Asha:
    grace: int
    eta: int = 3
    mode: str = "min"
    rungs: dict[int, dict[str, float]] = field(default_factory=dict)  # step -> {trial: value}

    def rung_steps(self, up_to: int) -> list[int]:
        steps, step = [], self.grace
        while step <= up_to:
            steps.append(step)
            step *= self.eta
        return steps

    def report(self, trial: str, step: int, value: float) -> Cut | None:
        """A trial's metric at `step`: a Cut when the trial should stop, else None. Steps
        that are not rungs, and rungs the trial already reported, change nothing."""
        if step not in self.rung_steps(step):
            return None
        recorded = self.rungs.setdefault(step, {})
        if trial in recorded:
            return None
        recorded[trial] = value
        cutoff = self.cutoff(list(recorded.values()))
        if self.mode == "min" and value > cutoff or self.mode == "max" and value < cutoff:
            return Cut(step, value, cutoff)
        return None

    def cutoff(self, values: list[float]) -> float:
        """The value at the edge of the best 1/eta (a linear-interpolated percentile, as
        numpy's `percentile`, which Ray Tune uses)."""
        ordered = sorted(values)
        q = 1 / self.eta if self.mode == "min" else 1 - 1 / self.eta
        position = q * (len(ordered) - 1)
        low = int(position)
        high = min(low + 1, len(ordered) - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
