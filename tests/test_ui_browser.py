"""`tunesmith ui` in a real headless chromium (Debian's, driven by Playwright): the pages a user
sees over a tiny workflow, live updates, the playground, compare, and hostile run content.

Screenshots go to $TUNESMITH_UI_SCREENSHOTS when set, else to pytest's temporary folder."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no chromium at {CHROMIUM}"),
]
sync_api = pytest.importorskip("playwright.sync_api")
pytest.importorskip("fastapi")

from test_ui_api import build_workflow, metric_lines  # noqa: E402

from tunesmith.generate import GenerationConfig, TextGenerator  # noqa: E402
from tunesmith.runs import open_workspace  # noqa: E402

EVIL = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2">'
expect = sync_api.expect


def add_hostile_run(ws: Path) -> int:
    """A finished run whose command line, samples and quality report carry HTML."""
    workspace = open_workspace(ws)
    run = workspace.create_run(
        "finetune", ["tunesmith", "finetune", "--data", EVIL], {"x": EVIL}, {}
    )
    folder = workspace.run_dir(run.id)
    (folder / "samples.jsonl").write_text(json.dumps({"step": 1, "samples": [EVIL]}) + "\n")
    (folder / "report.txt").write_text(
        f"Quality report\n   1. {EVIL!r} [copies a training example]\n"
    )
    workspace.finish(run.id, [], status="succeeded", ended=time.time(), duration=1.0, exit_code=0)
    return run.id


@pytest.fixture(scope="module")
def ui(tmp_path_factory, tiny_model_dir):
    """(base URL, workspace): the dashboard over runs 1-3 of the workflow and hostile run 4."""
    ws = build_workflow(tmp_path_factory.mktemp("ui-browser"), tiny_model_dir)
    assert add_hostile_run(ws) == 4
    proc = subprocess.Popen(
        [sys.executable, "-m", "tunesmith", "ui", "--port", "0", "--workspace", str(ws)],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    line = proc.stdout.readline()
    url = re.search(r"http://\S+", line)
    assert url, line
    yield url.group(0), ws
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM))
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = os.environ.get("TUNESMITH_UI_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        return Path(folder)
    return tmp_path_factory.mktemp("ui-screenshots")


@pytest.fixture()
def page(browser, ui):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.set_default_timeout(20_000)
    yield page
    context.close()
    assert errors == []  # no script error on any page


def test_runs_table_lists_the_workflow(page, ui, shots):
    url, _ = ui
    page.goto(url)
    rows = page.locator("tr[data-run]")
    expect(rows).to_have_count(4)
    assert [rows.nth(i).get_attribute("data-run") for i in range(4)] == ["4", "3", "2", "1"]
    expect(page.locator('tr[data-run="1"] td').nth(2)).to_have_text("data")
    expect(page.locator('tr[data-run="2"] .status')).to_have_text("succeeded")
    expect(page.locator('tr[data-run="2"]')).to_contain_text("runs/1")  # what it used
    page.select_option('select[aria-label="kind"]', "data")
    expect(rows).to_have_count(1)
    page.screenshot(path=shots / "runs.png")


def test_a_finetune_page_draws_one_point_per_logged_step(page, ui, shots):
    url, ws = ui
    page.goto(url + "#/runs/2")
    records = metric_lines(ws, 2)
    train = [r for r in records if "train_loss" in r]
    val = [r for r in records if r.get("val_loss") is not None]
    loss = page.locator('figure[data-title="Loss"]')
    expect(loss.locator('g[data-series="train"] circle')).to_have_count(len(train))
    expect(loss.locator('g[data-series="validation"] circle')).to_have_count(len(val))
    steps = loss.locator('g[data-series="train"] circle').evaluate_all(
        "cs => cs.map(c => Number(c.dataset.x))"
    )
    assert steps == [r["step"] for r in train]
    expect(page.locator("pre.log")).to_contain_text("Quality report")
    expect(page.locator(".quality li")).to_have_count(3)
    box = loss.locator("svg").bounding_box()
    loss.locator("svg").hover(position={"x": box["width"] * 0.6, "y": box["height"] / 2})
    expect(loss.locator(".chart-tip")).to_contain_text("train:")  # value on hover
    page.screenshot(path=shots / "run.png", full_page=True)


def test_a_running_runs_log_and_chart_grow_live(page, ui):
    url, ws = ui
    workspace = open_workspace(ws)
    run = workspace.create_run("finetune", ["tunesmith", "finetune"], {}, {})  # our own pid
    records = workspace.records_dir(run.id)
    try:

        def append(name: str, text: str) -> None:
            with open(records / name, "a") as f:
                f.write(text)

        append("log.txt", "step 1 started\n")
        append("metrics.jsonl", json.dumps({"step": 1, "train_loss": 3.0}) + "\n")
        page.goto(url + f"#/runs/{run.id}")
        points = page.locator('figure[data-title="Loss"] g[data-series="train"] circle')
        expect(points).to_have_count(1)
        expect(page.locator(".run-head .status")).to_have_text("running")
        for step in (2, 3):
            append("log.txt", f"step {step}: loss going down\n")
            append(
                "metrics.jsonl", json.dumps({"step": step, "train_loss": 3.0 - step / 10}) + "\n"
            )
            expect(points).to_have_count(step)
            expect(page.locator("pre.log")).to_contain_text(f"step {step}: loss going down")
    finally:
        workspace.finish(run.id, [], status="succeeded", ended=time.time(), duration=2.0)
    expect(page.locator(".run-head .status")).to_have_text("succeeded")
    workspace.delete(run.id)


def test_the_playground_streams_text(page, ui, shots):
    url, ws = ui
    page.goto(url + "#/playground?model=runs/2")
    page.fill('textarea[name="prompt"]', "Why did")
    page.fill('input[name="length"]', "20")
    page.fill('input[name="seed"]', "3")
    page.click("text=Generate")
    expect(page.locator(".stats")).to_contain_text("tokens/s", timeout=60_000)
    expect(page.locator(".stats")).to_contain_text("sample 1: ", timeout=60_000)
    expect(page.locator(".stats")).to_contain_text(" tokens, ", timeout=60_000)
    generator = TextGenerator.load(str(ws / "runs" / "2" / "model"))
    (expected,) = generator.generate("Why did", 1, GenerationConfig(length=20, seed=3))
    assert page.locator("pre.generation").text_content() == "Why did" + expected.text
    page.screenshot(path=shots / "playground.png")


def test_compare_overlays_two_runs(page, ui, shots):
    url, _ = ui
    page.goto(url)
    page.check('input[aria-label="pick run 2"]')
    page.check('input[aria-label="pick run 3"]')
    page.click("text=Compare selected")
    expect(page).to_have_url(re.compile(r"#/compare\?ids=2,3$"))
    chart = page.locator('figure[data-title="Training loss"]')
    expect(chart.locator("path.series")).to_have_count(2)
    assert chart.locator("path.series").evaluate_all("ps => ps.map(p => p.dataset.series)") == [
        "runs/2",
        "runs/3",
    ]
    expect(page.locator("table.diff tbody th")).to_have_text(["lr"])
    page.screenshot(path=shots / "compare.png", full_page=True)


def test_html_from_a_run_shows_as_text(page, ui, shots):
    url, _ = ui
    page.goto(url + "#/runs/4")
    expect(page.locator("pre.command")).to_contain_text("<script>window.pwned = 1</script>")
    expect(page.locator(".quality .sample-text")).to_have_text(EVIL)
    expect(page.locator(".quality .flag")).to_have_text("copies a training example")
    expect(page.locator("dd.sample-text")).to_have_text(EVIL)
    assert page.evaluate("window.pwned") is None
    assert page.locator("main script, main img[src='x']").count() == 0
    page.screenshot(path=shots / "hostile.png", full_page=True)


def test_a_download_outside_the_run_is_refused(page, ui):
    url, _ = ui
    page.goto(url)
    for path in ("../../etc/passwd", "%2e%2e/%2e%2e/etc/passwd", "/etc/passwd"):
        answer = page.request.get(url + f"api/runs/2/download?path={path}")
        assert answer.status == 403 and "root:" not in answer.text()
    good = page.request.get(url + "api/runs/2/download?path=report.txt")
    assert good.status == 200 and good.text().startswith("Quality report")


def test_delete_asks_first_and_keeps_the_lineage_guard(page, ui):
    url, ws = ui
    page.goto(url + "#/runs/1")
    page.click("text=Delete")
    page.click("text=Yes, delete it")
    expect(page.locator(".confirm")).to_contain_text("used by runs/2, runs/3")
    assert (ws / "runs" / "1").is_dir()
    workspace = open_workspace(ws)
    run = workspace.create_run("run", ["tunesmith", "run", "--", "true"], {}, {})
    workspace.finish(run.id, [], status="succeeded", ended=time.time(), duration=0.1)
    page.goto(url + f"#/runs/{run.id}")
    page.click("text=Delete")
    page.click("text=Cancel")
    assert workspace.get(run.id) is not None
    page.click("text=Delete")
    page.click("text=Yes, delete it")
    expect(page).to_have_url(re.compile(r"#/$"))
    expect(page.locator(f'tr[data-run="{run.id}"]')).to_have_count(0)
    expect(page.locator("tr[data-run]")).to_have_count(4)
    assert workspace.get(run.id) is None and not workspace.run_dir(run.id).exists()


def test_stop_asks_first_then_interrupts_the_run(page, ui):
    url, ws = ui
    workspace = open_workspace(ws)
    before = workspace.latest().id
    script = (
        "import time\nfrom tunesmith.runs import recorded_run\n"
        f"with recorded_run('sleep', workspace={str(ws)!r}, argv=['sleep', '60']):\n"
        "    time.sleep(60)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    try:
        for _ in range(400):
            latest = workspace.latest()
            if latest.id != before:
                break
            time.sleep(0.05)
        page.goto(url + f"#/runs/{latest.id}")
        expect(page.locator(".run-head .status")).to_have_text("running")
        page.click("text=Stop")
        page.click("text=Cancel")
        assert child.poll() is None
        page.click("text=Stop")
        page.click("text=Yes, stop it")
        child.wait(timeout=30)
        expect(page.locator(".run-head .status")).to_have_text("interrupted")
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    workspace.delete(latest.id)
