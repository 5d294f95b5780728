"""`--resume` settings: the interrupted run's config, with only harmless changes accepted."""

from __future__ import annotations

import pytest

from tunesmith.errors import RunError, UsageError
from tunesmith.train.config import FinetuneConfig
from tunesmith.train.resume import resume_config


@pytest.fixture()
def started(tmp_path):
    """The folder of an interrupted LoRA run, as `finetune` leaves it."""
    folder = tmp_path / "runs" / "4"
    folder.mkdir(parents=True)
    FinetuneConfig(data="jokes.csv", lora=True, epochs=5, report_samples=10).save(folder)
    return folder


def test_the_run_settings_come_back_with_the_given_ones_over_them(started):
    config = resume_config({"resume": str(started), "device": "cpu", "num_threads": 2})
    assert config.data == "jokes.csv" and config.lora and config.epochs == 5
    assert config.device == "cpu" and config.num_threads == 2
    assert config.resume == str(started)
    # runs/N/model (what `runs/N` names) leads to the same run.
    assert resume_config({"resume": str(started / "model")}).resume == str(started)


def test_options_that_cannot_change_the_weights_may_change(started):
    harmless = {
        "report_samples": 2,
        "samples": 0,
        "sample_every": 1,
        "sample_tokens": 5,
        "save_every": 3,
        "keep_checkpoints": 5,
        "progress": False,
        "compile": True,
    }
    config = resume_config({"resume": str(started), **harmless})
    assert {k: getattr(config, k) for k in harmless} == harmless


@pytest.mark.parametrize(
    "given, named",
    [({"lr": 0.5}, "--lr None (now 0.5)"), ({"lora": False}, "--lora True (now False)")],
)
def test_options_that_change_the_weights_are_refused(started, given, named):
    with pytest.raises(UsageError) as e:
        resume_config({"resume": "runs/4", **given}, use=lambda ref, **_: str(started))
    assert str(e.value).startswith("--resume runs/4: that run was started with other settings")
    assert named in str(e.value)


def test_a_folder_that_is_not_a_finetune_run_is_refused(tmp_path):
    with pytest.raises(RunError, match="is not a fine-tuning run"):
        resume_config({"resume": str(tmp_path)})


def test_the_given_reference_is_resolved_by_the_run(started):
    asked = []

    def use(ref, allow_unfinished=False):
        asked.append((ref, allow_unfinished))
        return str(started)

    assert resume_config({"resume": "runs/last"}, use=use).resume == str(started)
    assert asked == [("runs/last", True)]
