"""The dashboard's page of a sweep: its trials' table (each trial's run named for a link) and
its plots, read from what the sweep wrote."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from tunesmith.runs import recorded_run  # noqa: E402
from tunesmith.sweep.results import write_results  # noqa: E402
from tunesmith.sweep.trials import Trial  # noqa: E402
from tunesmith.ui.app import create_app  # noqa: E402


def test_a_sweep_page_has_its_table_plots_and_trial_runs(workspace):
    with recorded_run("finetune") as first, recorded_run("finetune") as second:
        pass
    trials = [
        Trial(0, {"lr": 1e-9}, "stopped", [first.id], [(0, 10.8), (3, 10.8)], note="stopped"),
        Trial(1, {"lr": 3e-3}, "succeeded", [second.id], [(0, 10.8), (3, 9.1), (6, 7.5)]),
    ]
    with recorded_run("sweep") as sweep:
        write_results(sweep.dir, trials, "val_loss", "min")
    client = TestClient(create_app(workspace), base_url="http://127.0.0.1")
    page = client.get(f"/api/runs/{sweep.id}").json()["sweep"]
    assert page["header"][:3] == ["trial", "lr", "best val_loss"]
    assert [row[0] for row in page["rows"]] == ["t1", "t0"]  # best first
    run_column = page["header"].index("run")
    assert [row[run_column] for row in page["rows"]] == [f"runs/{second.id}", f"runs/{first.id}"]
    assert page["plots"] == ["metric_vs_params.png", "val_curves.png"]
    plot = client.get(f"/api/runs/{sweep.id}/download", params={"path": "val_curves.png"})
    assert plot.status_code == 200 and plot.content[:4] == b"\x89PNG"
    assert client.get(f"/api/runs/{first.id}").json()["sweep"] is None  # not a sweep
