"""`tunesmith generate` as a user runs it: flags, output, runs and errors."""

import json
import subprocess
import sys

import pytest

from tunesmith.cli import main


@pytest.fixture()
def model(tiny_model_dir):
    return str(tiny_model_dir)


def run_cli(capsys, *args):
    code = main(["generate", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_one_sample_streams_prompt_and_text(model, workspace, capsys):
    code, out, err = run_cli(
        capsys,
        "--model",
        model,
        "--prompt",
        "Knock knock",
        "--length",
        "8",
        "--seed",
        "1",
        "--no-run",
    )
    assert code == 0
    assert out.startswith("Knock knock") and len(out) > len("Knock knock\n")


def test_same_seed_same_output(model, workspace, capsys):
    args = ["--model", model, "--length", "12", "--seed", "42", "--num-samples", "3", "--no-run"]
    first = run_cli(capsys, *args)[1]
    second = run_cli(capsys, *args)[1]
    other = run_cli(capsys, *args[:-2], "43", "--no-run")[1]
    assert first == second and first != other
    assert first.count("=== sample ") == 3


def test_jsonl_output_and_output_file(model, workspace, capsys, tmp_path):
    target = tmp_path / "samples.jsonl"
    code, out, _ = run_cli(
        capsys,
        "--model",
        model,
        "--length",
        "6",
        "--num-samples",
        "4",
        "--batch-size",
        "3",
        "--format",
        "jsonl",
        "--seed",
        "0",
        "--output",
        str(target),
        "--no-run",
    )
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["index"] for r in rows] == [0, 1, 2, 3]
    assert all(r["finish_reason"] in ("eos", "length") and r["tokens"] <= 6 for r in rows)
    assert [json.loads(line) for line in target.read_text().splitlines()] == rows


def test_stop_string_cuts_samples(model, workspace, capsys):
    base = [
        "--model",
        model,
        "--length",
        "30",
        "--seed",
        "3",
        "--ignore-eos",
        "--no-run",
        "--format",
        "jsonl",
        "--num-samples",
        "2",
    ]
    free = [json.loads(x) for x in run_cli(capsys, *base)[1].splitlines()]
    stop = free[0]["text"][5:8]
    cut = [json.loads(x) for x in run_cli(capsys, *base, "--stop", stop)[1].splitlines()]
    assert cut[0]["text"] == free[0]["text"][: free[0]["text"].find(stop)]
    assert cut[0]["finish_reason"] == "stop"


def test_prompt_file(model, workspace, capsys, tmp_path):
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("Why did the")
    code, out, _ = run_cli(
        capsys, "--model", model, "--prompt-file", str(prompt), "--length", "3", "--no-run"
    )
    assert code == 0 and out.startswith("Why did the")


def test_generate_is_recorded_as_a_run(model, workspace, capsys):
    code, _, err = run_cli(
        capsys, "--model", model, "--length", "5", "--num-samples", "2", "--seed", "1"
    )
    assert code == 0
    assert "run 1" in err
    samples = (workspace / "runs" / "1" / "samples.jsonl").read_text().splitlines()
    assert len(samples) == 2


@pytest.mark.parametrize(
    "args, message",
    [
        (["--temperature", "-1"], "temperature must be >= 0"),
        (["--top-p", "2"], "top-p must be in (0, 1]"),
        (["--length", "0"], "length must be at least 1"),
        (["--num-samples", "0"], "at least 1"),
        (["--prompt-file", "/nonexistent/prompt.txt"], "does not exist"),
        (["--prompt", "word " * 100, "--length", "70"], "exceeds the model's context of 128"),
        (["--device", "tpu"], "unknown device"),
        (["--dtype", "int3"], "unknown dtype"),
        (["--quantize", "int4"], "unknown quantization 'int4'; use --quantize none or int8"),
    ],
)
def test_bad_input_is_one_clean_line(model, workspace, capsys, args, message):
    code, _, err = run_cli(capsys, "--model", model, "--no-run", *args)
    assert code != 0
    assert message in err
    assert "Traceback" not in err and err.strip().count("\n") == 0


def test_python_dash_m_entry_point(model, workspace):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tunesmith",
            "generate",
            "--model",
            model,
            "--length",
            "4",
            "--seed",
            "1",
            "--no-run",
            "--temperature",
            "0",
            "--ignore-eos",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


def test_default_model_gpt2_comes_from_the_offline_hub_cache(offline_hub, workspace, capsys):
    code, out, err = run_cli(
        capsys,
        "--length",
        "5",
        "--seed",
        "1",
        "--ignore-eos",
        "--num-samples",
        "2",
        "--format",
        "jsonl",
    )
    assert code == 0, err
    assert len(out.splitlines()) == 2
    meta = (workspace / "runs" / "1" / ".tunesmith" / "meta.json").read_text()
    assert '"gpt2"' in meta
