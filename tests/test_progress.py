"""One progress policy: a bar on a terminal; elsewhere a plain line at most every 30 s (and a
last one if any was written), so a log never fills with one redrawn frame per step."""

from __future__ import annotations

import io

from tunesmith.progress import PLAIN_EVERY_S, PlainProgress, progress_bar


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_fast_run_off_a_terminal_writes_nothing():
    out = io.StringIO()
    with progress_bar(88, "training", "step", stream=out) as bar:
        for step in range(88):
            bar.set_postfix(loss=f"{step:.3f}")
            bar.update(1)
    assert out.getvalue() == ""


def test_a_slow_run_writes_a_line_every_thirty_seconds_and_one_at_the_end():
    out, clock = io.StringIO(), Clock()
    bar = PlainProgress(88, "training", "step", out, clock=clock)
    for step in range(88):
        clock.now += 1.0  # one step a second: 88 s
        bar.set_postfix(loss=f"{3 - step / 100:.2f}")
        bar.update(1)
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 3  # at 30 s, 60 s and the end
    assert lines[0] == "training: 30/88 step (34%), 1.00 step/s, loss=2.71"
    assert lines[-1].startswith("training: 88/88 step (100%)")
    assert "\r" not in out.getvalue()


def test_a_finished_count_is_not_written_twice():
    out, clock = io.StringIO(), Clock()
    bar = PlainProgress(10, None, "ex", out, clock=clock)
    clock.now = PLAIN_EVERY_S
    bar.update(10)
    bar.close()
    assert out.getvalue().splitlines() == ["10/10 ex (100%), 0.33 ex/s"]


def test_downloads_count_megabytes():
    out, clock = io.StringIO(), Clock()
    bar = PlainProgress(None, "big.csv", "B", out, megabytes=True, clock=clock)
    clock.now = 40.0
    bar.update(80 * 1024 * 1024)
    assert out.getvalue() == "big.csv: 80.0 MB, 2.00 MB/s\n"


def test_disabled_writes_nothing_anywhere():
    out = io.StringIO()
    with progress_bar(5, "x", enabled=False, stream=out) as bar:
        bar.update(5)
    assert out.getvalue() == ""


def test_an_88_step_run_leaves_a_small_log(workspace, capsys):
    from tunesmith.runs import recorded_run

    # As the fine-tune loop drives its bar: a postfix and an update each step.
    with recorded_run("finetune", {}) as run:
        with progress_bar(88, unit="step", initial=0, dynamic_ncols=True) as bar:
            for step in range(88):
                bar.set_postfix(epoch=f"{step / 10:.2f}", loss=f"{3 - step / 100:.3f}")
                bar.update(1)
        log = run.dir / ".tunesmith" / "log.txt"
    text = log.read_text()
    assert "\r" not in text and "step" not in text.replace("run 1", "")
    assert len(text.encode()) < 200  # a frame a step was 12 KB
