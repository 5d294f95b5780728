"""lm-evaluation-harness (`local-completions`) against a live server with the tiny model: a
multiple-choice task (loglikelihood requests: token-id prompts, echo, logprobs, max_tokens 1)
and a generate_until task with 5 `until` strings (6 stops with the <|endoftext|> it adds) run
to completion. The tasks are YAML + JSONL files in tests/lm_eval_tasks; nothing leaves the
machine (the tokenizer is the tiny model's folder)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunesmith.generate import TextGenerator
from tunesmith.server import CompletionServer, RequestLog, ServerConfig

lm_eval = pytest.importorskip("lm_eval")
TASKS = Path(__file__).parent / "lm_eval_tasks"


def test_lm_eval_runs_a_choice_and_a_generate_until_task(
    tiny_model_dir, offline_hub, tmp_path, monkeypatch
):
    from lm_eval.tasks import TaskManager

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.chdir(TASKS)  # the YAML files name their JSONL files relative to here
    generator = TextGenerator.load(str(tiny_model_dir), device="cpu")
    log = RequestLog(tmp_path / "requests.jsonl")
    with CompletionServer(generator, ServerConfig(port=0), "tiny", log) as server:
        results = lm_eval.simple_evaluate(
            model="local-completions",
            model_args={
                "model": "tiny",
                "base_url": f"{server.url}/completions",
                "tokenizer_backend": "huggingface",
                "tokenizer": str(tiny_model_dir),
                "max_length": generator.context_length,
                "num_concurrent": 1,
                "max_retries": 1,
            },
            tasks=["tunesmith_tiny_choice", "tunesmith_tiny_until"],
            task_manager=TaskManager(include_path=str(TASKS)),
            bootstrap_iters=0,
            log_samples=True,
        )
    choice = results["results"]["tunesmith_tiny_choice"]
    until = results["results"]["tunesmith_tiny_until"]
    assert 0 <= choice["acc,none"] <= 1 and 0 <= until["exact_match,none"] <= 1
    samples = results["samples"]
    assert len(samples["tunesmith_tiny_choice"]) == 4 and len(samples["tunesmith_tiny_until"]) == 3
    for sample in samples["tunesmith_tiny_choice"]:
        scores = [r[0] for r in sample["filtered_resps"]]  # (loglikelihood, is_greedy)
        assert all(s < 0 for s in scores) and len(set(scores)) == len(scores)

    entries = [json.loads(line) for line in (tmp_path / "requests.jsonl").read_text().splitlines()]
    assert entries and all(e["status"] == 200 for e in entries)
    assert sum(e["choices"] for e in entries) == 4 * 3 - 1 + 3  # 11 choices (4 docs), 3 prompts
