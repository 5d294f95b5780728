"""`--report-to`: a fine-tune's metrics, parameters, samples and model, sent to the trackers
people already watch training with (TensorBoard, Weights & Biases, MLflow), each through its
own library.

`reporting(run, config)` wraps the run handle the training loop logs to, so the loop does not
change: each `log_metrics` also goes to the trackers, samples are picked up from the run's
samples.jsonl as the loop writes them, and `set_main_output` (the model is saved) sends the model
and the quality report. Each can keep everything in the run folder: TensorBoard event files
in runs/N/tensorboard, W&B under runs/N/wandb (with WANDB_MODE=offline), MLflow in
runs/N/mlruns (unless MLFLOW_TRACKING_URI names a server). A tracker that fails mid-run is
dropped with one warning in the log; training goes on.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from tqdm import tqdm

from tunesmith.errors import UsageError
from tunesmith.train.config import TRACKERS, FinetuneConfig

SAMPLES_FILE = "samples.jsonl"  # written by the training loop (train/loop.py)
REPORT_FILE = "report.txt"  # written by finetune before the model is announced
FINAL_PREFIX = "final/"  # the run's final metrics, kept apart from the per-step series
PROJECT = "tunesmith"  # W&B project / MLflow experiment unless the environment names one


class Tracker(Protocol):
    """One tracker's side of a run. Steps are optimizer steps, as in metrics.jsonl."""

    name: str

    def log_params(self, params: dict[str, Any]) -> None: ...

    def log_metrics(self, values: dict[str, float], step: int) -> None: ...

    def log_samples(self, samples: list[str], step: int) -> None: ...

    def log_model(self, path: Path, report: str, step: int) -> None: ...

    def close(self, ok: bool) -> None: ...


class TensorBoardTracker:
    """Event files in runs/N/tensorboard: scalars, the config and samples as text; the model
    as its path (TensorBoard stores no files)."""

    name = "tensorboard"

    def __init__(self, folder: Path, run_name: str):
        from torch.utils.tensorboard import SummaryWriter

        # Flushed every 10 s (not the default 120) so a live TensorBoard follows the run.
        self._writer = SummaryWriter(log_dir=str(folder / "tensorboard"), flush_secs=10)

    def log_params(self, params: dict[str, Any]) -> None:
        rows = "\n".join(f"| {k} | {json.dumps(v)} |" for k, v in params.items())
        self._writer.add_text("config", "| option | value |\n|---|---|\n" + rows, 0)

    def log_metrics(self, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            self._writer.add_scalar(key, value, step)

    def log_samples(self, samples: list[str], step: int) -> None:
        self._writer.add_text("samples", "\n\n".join(_fenced(s) for s in samples), step)

    def log_model(self, path: Path, report: str, step: int) -> None:
        self._writer.add_text("model", f"saved to `{path}`\n\n{_fenced(report)}", step)

    def close(self, ok: bool) -> None:
        self._writer.close()


class WandbTracker:
    """A W&B run (online, or offline files under runs/N/wandb with WANDB_MODE=offline)."""

    name = "wandb"

    def __init__(self, folder: Path, run_name: str):
        import wandb

        self._wandb = wandb
        where = {} if os.environ.get("WANDB_DIR") else {"dir": str(folder)}
        self._run = wandb.init(
            project=os.environ.get("WANDB_PROJECT") or PROJECT,
            name=run_name,
            # Our own run of W&B, whatever else the process has open; no console capture:
            # the run's log already keeps what is printed, and W&B's would wrap our streams.
            reinit="create_new",
            settings=wandb.Settings(console="off"),
            **where,
        )
        # Samples reach W&B a step after they are written, so rows carry our step as their
        # x axis instead of W&B's own (which only moves forward).
        self._run.define_metric("step")
        self._run.define_metric("*", step_metric="step")

    def log_params(self, params: dict[str, Any]) -> None:
        self._run.config.update(params, allow_val_change=True)

    def log_metrics(self, values: dict[str, float], step: int) -> None:
        self._run.log({**values, "step": step})

    def log_samples(self, samples: list[str], step: int) -> None:
        table = self._wandb.Table(columns=["step", "sample"], data=[[step, s] for s in samples])
        self._run.log({"samples": table, "step": step})

    def log_model(self, path: Path, report: str, step: int) -> None:
        artifact = self._wandb.Artifact(f"model-{self._run.id}", type="model", description=report)
        # immutable: W&B reads the files where they are instead of copying the whole model
        # into its staging folder; runs/N/model does not change after the run.
        artifact.add_dir(str(path), policy="immutable")
        self._run.log_artifact(artifact)

    def close(self, ok: bool) -> None:
        self._run.finish(exit_code=0 if ok else 1)


class MlflowTracker:
    """An MLflow run: in runs/N/mlruns (a SQLite store and its artifacts) unless
    MLFLOW_TRACKING_URI names another store or a server."""

    name = "mlflow"

    def __init__(self, folder: Path, run_name: str):
        from mlflow import MlflowClient

        uri, artifacts = os.environ.get("MLFLOW_TRACKING_URI"), None
        if not uri:
            # SQLite, not MLflow's plain-file store: MLflow 3 refuses that one by default.
            store = (folder / "mlruns").resolve()  # a file URI must be absolute
            store.mkdir(parents=True, exist_ok=True)
            uri, artifacts = f"sqlite:///{store / 'mlflow.db'}", (store / "artifacts").as_uri()
        self._client = MlflowClient(tracking_uri=uri)
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or PROJECT
        experiment = self._client.get_experiment_by_name(name)
        if experiment is None:
            experiment_id = self._client.create_experiment(name, artifact_location=artifacts)
        else:
            experiment_id = experiment.experiment_id
        self._run_id = self._client.create_run(experiment_id, run_name=run_name).info.run_id

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v if isinstance(v, str) else json.dumps(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 parameters a batch
            self._client.log_batch(self._run_id, params=items[i : i + 100])

    def log_metrics(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, step) for k, v in values.items()]
        self._client.log_batch(self._run_id, metrics=metrics)

    def log_samples(self, samples: list[str], step: int) -> None:
        text = "\n\n".join(samples) + "\n"
        self._client.log_text(self._run_id, text, f"samples/step_{step:06d}.txt")

    def log_model(self, path: Path, report: str, step: int) -> None:
        self._client.log_artifacts(self._run_id, str(path), "model")
        self._client.log_text(self._run_id, report, REPORT_FILE)

    def close(self, ok: bool) -> None:
        self._client.set_terminated(self._run_id, "FINISHED" if ok else "FAILED")


BACKENDS: dict[str, tuple[type, str]] = {  # name -> (class, the module its library provides)
    "tensorboard": (TensorBoardTracker, "torch.utils.tensorboard"),
    "wandb": (WandbTracker, "wandb"),
    "mlflow": (MlflowTracker, "mlflow"),
}
assert set(BACKENDS) == set(TRACKERS)


class Fanout:
    """Every tracker gets every call; one that raises is warned about once and dropped."""

    def __init__(self, trackers: list[Tracker]):
        self.trackers = list(trackers)
        self._failed: list[Tracker] = []

    def call(self, method: str, *args: Any) -> None:
        for tracker in list(self.trackers):
            try:
                getattr(tracker, method)(*args)
            except Exception as e:  # a tracker must never end the training
                self.trackers.remove(tracker)
                self._failed.append(tracker)
                warn(
                    f"--report-to {tracker.name} failed ({_one_line(e)}); "
                    "nothing more goes to it, training goes on"
                )

    def close(self, ok: bool) -> None:
        failed, self._failed = self._failed, []
        self.call("close", ok)
        for tracker in failed:  # e.g. stop W&B's service even after its failure
            try:
                tracker.close(False)
            except Exception:
                pass


def open_trackers(names: tuple[str, ...], folder: Path, run_name: str) -> Fanout:
    """Start a run in each tracker, or fail before training with the extra to install."""
    names = tuple(dict.fromkeys(names))
    for name in names:
        _check_installed(name)
    opened: list[Tracker] = []
    try:
        for name in names:
            try:
                opened.append(BACKENDS[name][0](folder, run_name))
            except Exception as e:
                raise UsageError(
                    f"--report-to {name}: cannot start a run ({_one_line(e)}); {_START_HINT[name]}"
                ) from None
    except BaseException:
        Fanout(opened).close(False)
        raise
    return Fanout(opened)


_START_HINT = {
    "tensorboard": "check that the run folder is writable",
    "wandb": "log in with `wandb login`, or set WANDB_MODE=offline to keep the run in runs/N/wandb",
    "mlflow": "check MLFLOW_TRACKING_URI (without it the run goes to runs/N/mlruns)",
}


def _check_installed(name: str) -> None:
    module = BACKENDS[name][1]
    try:
        __import__(module)
    except ImportError:
        raise UsageError(
            f"--report-to {name} needs the {name} library: pip install 'tunesmith[{name}]'"
        ) from None


class TrackedRun:
    """A run handle that also reports to trackers; everything else goes to the run it wraps."""

    def __init__(self, run: Any, trackers: Fanout):
        self._run, self._trackers = run, trackers
        self._step = 0
        samples = Path(run.dir) / SAMPLES_FILE
        # Only what this run writes: a folder reused with --no-run may hold older samples.
        self._samples_at = samples.stat().st_size if samples.exists() else 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._run, name)

    def log_metrics(self, values: dict[str, Any], step: int | None = None) -> None:
        self._run.log_metrics(values, step=step)
        self._forward_samples()
        numbers = {k: float(v) for k, v in values.items() if _is_number(v)}
        if step is not None and numbers:
            self._step = max(self._step, step)
            self._trackers.call("log_metrics", numbers, step)

    def set_main_output(self, relpath: str) -> None:
        self._run.set_main_output(relpath)
        self._forward_samples()
        report = Path(self._run.dir) / REPORT_FILE
        text = report.read_text(encoding="utf-8") if report.is_file() else ""
        self._trackers.call("log_model", Path(self._run.dir) / relpath, text, self._step)

    def close(self, ok: bool) -> None:
        self._forward_samples()
        final = getattr(self._run, "final_metrics", None) or {}
        numbers = {FINAL_PREFIX + k: float(v) for k, v in final.items() if _is_number(v, True)}
        if ok and numbers:
            self._trackers.call("log_metrics", numbers, self._step)
        self._trackers.close(ok)

    def _forward_samples(self) -> None:
        """Send the samples the loop appended to samples.jsonl since the last look."""
        try:
            with open(Path(self._run.dir) / SAMPLES_FILE, "rb") as f:
                f.seek(self._samples_at)
                chunk = f.read()
        except FileNotFoundError:
            return
        complete = chunk.rfind(b"\n") + 1
        self._samples_at += complete
        for line in chunk[:complete].splitlines():
            record = json.loads(line)
            self._trackers.call("log_samples", list(record["samples"]), int(record["step"]))


@contextmanager
def reporting(run: Any, config: FinetuneConfig, enabled: bool = True) -> Iterator[Any]:
    """`run`, wrapped to report to the trackers of `config.report_to` (if any) until exit."""
    if run is None or not enabled or not config.report_to:
        yield run
        return
    run_id = getattr(run, "id", None)
    name = f"runs/{run_id}" if run_id is not None else Path(run.dir).resolve().name
    trackers = open_trackers(config.report_to, Path(run.dir), name)
    tracked, ok = TrackedRun(run, trackers), False
    try:
        trackers.call("log_params", config.to_dict())
        yield tracked
        ok = True
    finally:
        tracked.close(ok)


def warn(text: str) -> None:
    tqdm.write(f"warning: {text}", file=sys.stderr)


def _one_line(error: Exception) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split())}"


def _is_number(value: Any, allow_bool: bool = False) -> bool:
    if isinstance(value, bool):
        return allow_bool
    return isinstance(value, (int, float))


def _fenced(text: str) -> str:
    """Markdown that shows `text` as it is (TensorBoard renders text summaries as markdown)."""
    return "\n".join("    " + line for line in text.splitlines()) or "    "
