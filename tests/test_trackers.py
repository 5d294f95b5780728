"""`finetune --report-to`: what each tracker received, read back with that tracker's own reader
(TensorBoard's EventAccumulator, W&B's offline run file, MLflow's client), against the run's
own metrics.jsonl, samples.jsonl, finetune_config.json and model folder."""

from __future__ import annotations

import csv
import json
import struct
import sys
from pathlib import Path

import pytest

from tunesmith.cli import main
from tunesmith.errors import UsageError
from tunesmith.runs import open_workspace
from tunesmith.train import FinetuneConfig
from tunesmith.train import trackers as trackers_module

FAST = [
    "--max-steps",
    "4",
    "--eval-every",
    "2",
    "--sample-every",
    "2",
    "--batch-size",
    "4",
    "--samples",
    "2",
    "--sample-tokens",
    "6",
    "--report-samples",
    "2",
    "--no-progress",
    "--dropout",
    "0",
]
ALL = ["--report-to", "tensorboard", "--report-to", "wandb", "--report-to", "mlflow"]


def _jokes(folder: Path) -> Path:
    path = folder / "jokes.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ID", "Joke"])
        for i in range(40):
            w.writerow([i, f"Joke number {i}: why did the chicken cross road {i}? To get away."])
    return path


def _offline_trackers(mp: pytest.MonkeyPatch, tmp: Path) -> None:
    """W&B offline with its caches in tmp; MLflow in the run folder; nothing from the host."""
    mp.setenv("WANDB_MODE", "offline")
    mp.setenv("WANDB_SILENT", "true")
    for name in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_ARTIFACT_DIR"):
        mp.setenv(name, str(tmp / name.lower()))
    for name in ("WANDB_DIR", "WANDB_PROJECT", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"):
        mp.delenv(name, raising=False)


@pytest.fixture(scope="module")
def reported(tmp_path_factory, tiny_model_dir):
    """One recorded fine-tune reporting to all three trackers: its run folder."""
    tmp = tmp_path_factory.mktemp("trackers")
    ws = tmp / "workspace"
    ws.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        _offline_trackers(mp, tmp)
        mp.setenv("TUNESMITH_HOME", str(ws))
        mp.chdir(ws)
        args = ["finetune", "--model", str(tiny_model_dir), "--data", str(_jokes(tmp))]
        assert main([*args, *FAST, *ALL]) == 0
    return ws / "runs" / "1"


def _series(run: Path, key: str) -> list[tuple[int, float]]:
    """(step, value) of `key` in the run's own metrics.jsonl: what every tracker must hold."""
    lines = (run / ".tunesmith" / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(x) for x in lines]
    return [(r["step"], r[key]) for r in records if r.get(key) is not None]


def _assert_same_series(got: list[tuple[int, float]], expected: list[tuple[int, float]]) -> None:
    assert [step for step, _ in got] == [step for step, _ in expected]
    assert [value for _, value in got] == pytest.approx([value for _, value in expected])


def _samples(run: Path) -> dict[int, list[str]]:
    lines = (run / "samples.jsonl").read_text().splitlines()
    return {r["step"]: r["samples"] for r in map(json.loads, lines)}


def _config(run: Path) -> dict:
    return json.loads((run / "finetune_config.json").read_text())


def test_the_run_itself_is_as_without_trackers(reported):
    assert _series(reported, "train_loss") and [s for s, _ in _series(reported, "val_loss")] == [
        0,
        2,
        4,
    ]
    assert sorted(_samples(reported)) == [2, 4]
    assert _config(reported)["report_to"] == ["tensorboard", "wandb", "mlflow"]
    assert (reported / "model" / "model.safetensors").is_file()


def test_tensorboard_event_files_hold_every_step_config_samples_and_model(reported):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(reported / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    for key in ("train_loss", "val_loss", "lr", "val_ppl"):
        _assert_same_series(
            [(e.step, e.value) for e in events.Scalars(key)], _series(reported, key)
        )
    final = events.Scalars("final/val_loss_after")
    assert final[0].value == pytest.approx(_series(reported, "val_loss")[-1][1])

    def texts(tag: str) -> dict[int, str]:
        return {e.step: e.tensor_proto.string_val[0].decode() for e in events.Tensors(tag)}

    config = texts("config/text_summary")[0]
    assert all(f"| {k} | {json.dumps(v)} |" in config for k, v in _config(reported).items())
    samples = texts("samples/text_summary")
    assert sorted(samples) == [2, 4]
    for step, expected in _samples(reported).items():
        assert all(s.splitlines()[0] in samples[step] for s in expected if s)
    model = texts("model/text_summary")[4]
    assert str(reported / "model") in model and "Quality report" in model


def _wandb_records(run: Path) -> list:
    """The records of W&B's offline run file (a LevelDB-style log of protobuf records, as
    `wandb sync` reads it: 32 KiB blocks, each chunk with a 7-byte header)."""
    from wandb.proto import wandb_internal_pb2

    (path,) = run.glob("wandb/offline-run-*/run-*.wandb")
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block, pos, pending, records = 32768, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 0:
            continue
        pending = chunk if kind in (1, 2) else pending + chunk  # FULL/FIRST start a record
        if kind in (1, 4):  # FULL/LAST end one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def _items(update) -> dict:
    return {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in update}


def test_wandb_offline_run_holds_every_step_config_samples_and_model(reported):
    records = _wandb_records(reported)
    kinds = [r.WhichOneof("record_type") for r in records]
    assert "exit" in kinds and next(r for r in records if r.HasField("exit")).exit.exit_code == 0
    (run,) = [r.run for r in records if r.HasField("run")]
    assert run.display_name == "runs/1" and run.project == "tunesmith"
    config = {}
    for r in records:
        if r.HasField("config"):
            config.update(_items(r.config.update))
    assert {k: config[k] for k in _config(reported)} == _config(reported)

    rows = [_items(r.history.item) for r in records if r.HasField("history")]
    for key in ("train_loss", "val_loss", "grad_norm"):
        _assert_same_series(
            [(row["step"], row[key]) for row in rows if key in row], _series(reported, key)
        )

    files = next(reported.glob("wandb/offline-run-*")) / "files"
    tables = [row for row in rows if "samples/path" in row]
    got: dict[int, list[str]] = {}
    for row in tables:
        table = json.loads((files / row["samples/path"]).read_text())
        assert table["columns"] == ["step", "sample"]
        for step, text in table["data"]:
            got.setdefault(step, []).append(text)
    assert got == _samples(reported)

    (model,) = [
        r.artifact for r in records if r.HasField("artifact") and r.artifact.type == "model"
    ]
    stored = {entry.path for entry in model.manifest.contents}
    assert {p.name for p in (reported / "model").iterdir() if p.is_file()} <= stored
    assert "Quality report" in model.description
    summary = {}
    for r in records:
        if r.HasField("summary"):
            summary.update(_items(r.summary.update))
    assert summary["final/val_loss_after"] == pytest.approx(_series(reported, "val_loss")[-1][1])


def test_mlflow_store_in_the_run_holds_every_step_params_samples_and_model(reported):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{reported / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tunesmith")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "runs/1" and run.info.status == "FINISHED"
    run_id = run.info.run_id
    for key in ("train_loss", "val_loss", "tokens_per_s"):
        history = client.get_metric_history(run_id, key)
        _assert_same_series(sorted((m.step, m.value) for m in history), _series(reported, key))
    assert run.data.metrics["final/val_loss_after"] == pytest.approx(
        _series(reported, "val_loss")[-1][1]
    )
    # MLflow parameters are strings: text as it is, everything else as JSON.
    config = {k: v if isinstance(v, str) else json.dumps(v) for k, v in _config(reported).items()}
    assert run.data.params == config

    def artifact(path: str) -> Path:
        return Path(client.download_artifacts(run_id, path, str(reported.parent / "dl")))

    for step, samples in _samples(reported).items():
        text = artifact(f"samples/step_{step:06d}.txt").read_text()
        assert text == "\n\n".join(samples) + "\n"
    assert artifact("report.txt").read_text() == (reported / "report.txt").read_text()
    model = {a.path for a in client.list_artifacts(run_id, "model")}
    assert {"model/model.safetensors", "model/config.json", "model/tokenizer.json"} <= model


@pytest.mark.parametrize(
    ("tracker", "module"),
    [("tensorboard", "torch.utils.tensorboard"), ("wandb", "wandb"), ("mlflow", "mlflow")],
)
def test_a_missing_library_fails_before_training_naming_the_extra(
    tracker, module, workspace, tiny_model_dir, monkeypatch, capsys
):
    monkeypatch.setitem(sys.modules, module, None)  # `import` of it raises ImportError
    args = ["finetune", "--model", str(tiny_model_dir), "--data", str(_jokes(workspace))]
    assert main([*args, *FAST, "--report-to", tracker]) == 2
    err = capsys.readouterr().err
    assert f"tunesmith: error: --report-to {tracker} needs the {tracker} library: " in err
    assert f"pip install 'tunesmith[{tracker}]'" in err and "Traceback" not in err
    assert not (workspace / "runs" / "1" / "model").exists()
    assert not (workspace / "runs" / "1" / "checkpoints").exists()
    assert open_workspace(workspace).get(1).status == "failed"


def test_a_tracker_failing_mid_run_is_dropped_with_one_warning(
    workspace, tiny_model_dir, monkeypatch, tmp_path
):
    _offline_trackers(monkeypatch, tmp_path)
    logged = trackers_module.TensorBoardTracker.log_metrics

    def fails_from_step_2(self, values, step):
        if step >= 2:
            raise OSError("No space left on device")
        logged(self, values, step)

    monkeypatch.setattr(trackers_module.TensorBoardTracker, "log_metrics", fails_from_step_2)
    args = ["finetune", "--model", str(tiny_model_dir), "--data", str(_jokes(workspace))]
    assert main([*args, *FAST, "--report-to", "tensorboard", "--report-to", "mlflow"]) == 0
    run = workspace / "runs" / "1"
    assert (run / "model" / "model.safetensors").is_file()
    log = (run / ".tunesmith" / "log.txt").read_text()
    assert log.count("warning: --report-to tensorboard failed") == 1
    assert "No space left on device" in log and "training goes on" in log

    from mlflow import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train_loss")] == [1]  # nothing after the failure
    client = MlflowClient(tracking_uri=f"sqlite:///{run / 'mlruns' / 'mlflow.db'}")
    (other,) = client.search_runs([client.get_experiment_by_name("tunesmith").experiment_id])
    steps = [m.step for m in client.get_metric_history(other.info.run_id, "train_loss")]
    assert sorted(steps) == [1, 2, 3, 4]  # the other tracker got everything


def test_report_to_is_validated_and_may_change_on_resume(workspace, tiny_model_dir, capsys):
    with pytest.raises(UsageError, match="--report-to must be one of tensorboard, wandb, mlflow"):
        FinetuneConfig(data="x.csv", report_to=("comet",))
    with pytest.raises(SystemExit) as exit_:
        main(["finetune", "--data", "x.csv", "--report-to", "comet"])
    assert exit_.value.code == 2 and "invalid choice: 'comet'" in capsys.readouterr().err
    started = FinetuneConfig(data="x.csv", report_to=("wandb", "mlflow"))
    started.save(workspace)
    assert FinetuneConfig.load(workspace) == started  # a tuple again after the JSON round trip
    assert FinetuneConfig(data="x.csv").differences(started) == []  # it cannot change weights


def test_a_resumed_run_reports_the_whole_history_to_its_own_trackers(
    workspace, tiny_model_dir, monkeypatch, tmp_path
):
    from mlflow import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tunesmith.train import loop

    _offline_trackers(monkeypatch, tmp_path)
    real = loop._step

    def dies_at_step_3(t, indices, params, step):
        if step == 3:
            raise KeyboardInterrupt
        return real(t, indices, params, step)

    monkeypatch.setattr(loop, "_step", dies_at_step_3)
    args = ["finetune", "--model", str(tiny_model_dir), "--data", str(_jokes(workspace))]
    assert main([*args, *FAST, "--save-every", "2", "--report-to", "tensorboard"]) == 130
    events = EventAccumulator(str(workspace / "runs" / "1" / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train_loss")] == [1, 2, 3]
    monkeypatch.setattr(loop, "_step", real)
    # Another tracker on resume is allowed: it does not change the weights.
    assert main(["finetune", "--resume", "runs/1", "--no-progress", "--report-to", "mlflow"]) == 0
    run = workspace / "runs" / "2"
    assert not (run / "tensorboard").exists()
    client = MlflowClient(tracking_uri=f"sqlite:///{run / 'mlruns' / 'mlflow.db'}")
    (resumed,) = client.search_runs([client.get_experiment_by_name("tunesmith").experiment_id])
    history = client.get_metric_history(resumed.info.run_id, "train_loss")
    _assert_same_series(sorted((m.step, m.value) for m in history), _series(run, "train_loss"))
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == [1, 2, 3, 4]


def test_a_tracker_that_cannot_start_stops_the_run_before_training(
    workspace, tiny_model_dir, monkeypatch, tmp_path, capsys
):
    _offline_trackers(monkeypatch, tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "nosuchscheme://tracker")
    args = ["finetune", "--model", str(tiny_model_dir), "--data", str(_jokes(workspace))]
    assert main([*args, *FAST, "--report-to", "tensorboard", "--report-to", "mlflow"]) == 2
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if x.startswith("tunesmith: error:"))
    assert "--report-to mlflow: cannot start a run (" in line and "MLFLOW_TRACKING_URI" in line
    assert not (workspace / "runs" / "1" / "checkpoints").exists()


def test_library_use_reports_from_a_relative_output_folder(tiny_model_dir, monkeypatch, tmp_path):
    from mlflow import MlflowClient

    from tunesmith.train import finetune

    _offline_trackers(monkeypatch, tmp_path)
    monkeypatch.chdir(tmp_path)
    config = FinetuneConfig(
        model=str(tiny_model_dir),
        data=str(_jokes(tmp_path)),
        max_steps=2,
        batch_size=4,
        report_samples=1,
        sample_tokens=4,
        progress=False,
        report_to=("mlflow",),
    )
    result = finetune(config, output_dir="out")
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'out' / 'mlruns' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("tunesmith").experiment_id])
    assert run.info.run_name == "out" and run.info.status == "FINISHED"
    assert run.data.metrics["final/steps"] == result.steps == 2
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert sorted(m.step for m in history) == [1, 2]
