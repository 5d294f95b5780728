"""The device/precision policy: which device, dtype, autocast and thread count a run gets."""

import json

import pytest
import torch

from tunesmith import devices
from tunesmith.errors import UsageError


def test_unknown_or_missing_devices_are_usage_errors(monkeypatch):
    with pytest.raises(UsageError, match="unknown device 'tpu'"):
        devices.resolve_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert devices.resolve_device("auto") == torch.device("cpu")
    with pytest.raises(UsageError, match="no CUDA GPU is available; use --device cpu"):
        devices.resolve_device("cuda")


@pytest.mark.parametrize("native", [False, True])
def test_inference_dtype_follows_native_bf16_on_the_cpu(monkeypatch, native):
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: native)
    cpu = torch.device("cpu")
    assert devices.resolve_dtype("auto", cpu) == (torch.bfloat16 if native else torch.float32)
    assert devices.resolve_dtype("float32", cpu) == torch.float32
    with pytest.raises(UsageError, match="unknown dtype 'fp8'"):
        devices.resolve_dtype("fp8", cpu)


def test_training_autocast_policy(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert devices.use_bf16_autocast("auto", cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert not devices.use_bf16_autocast("auto", cuda)  # e.g. a V100: fp32
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: False)
    assert not devices.use_bf16_autocast("auto", cpu)
    assert not devices.use_bf16_autocast("fp32", cuda)
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: False)
    with pytest.raises(UsageError, match="no native bf16.*use --precision fp32"):
        devices.use_bf16_autocast("bf16", cpu)
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: True)
    assert devices.use_bf16_autocast("bf16", cpu)
    # auto on a native-bf16 CPU: bf16 only where it also trains faster there
    monkeypatch.setattr(devices, "cpu_trains_faster_in_bf16", lambda: True)
    assert devices.use_bf16_autocast("auto", cpu)
    monkeypatch.setattr(devices, "cpu_trains_faster_in_bf16", lambda: False)
    assert not devices.use_bf16_autocast("auto", cpu)
    assert devices.use_bf16_autocast("bf16", cpu)  # asked for: given, slower or not


def test_the_bf16_speed_probe_is_measured_once_and_remembered(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(devices, "_bf16_probe", {})
    speedups = iter([1.7])
    monkeypatch.setattr(devices, "_bf16_speedup", lambda: next(speedups))
    assert devices.cpu_trains_faster_in_bf16()
    saved = json.loads((tmp_path / "tunesmith" / devices.BF16_PROBE_FILE).read_text())
    assert list(saved.values()) == [True] and torch.__version__ in next(iter(saved))
    # a new process reads the answer (a second measurement would raise StopIteration)
    monkeypatch.setattr(devices, "_bf16_probe", {})
    assert devices.cpu_trains_faster_in_bf16()
    # a slower bf16 (or one too little faster to give up fp32's exact numbers) means fp32
    (tmp_path / "tunesmith" / devices.BF16_PROBE_FILE).write_text("not json")
    monkeypatch.setattr(devices, "_bf16_probe", {})
    monkeypatch.setattr(devices, "_bf16_speedup", lambda: 1.1)
    assert not devices.cpu_trains_faster_in_bf16()
    # an unwritable cache folder: still an answer
    monkeypatch.setenv("XDG_CACHE_HOME", "/proc/no-such-place")
    monkeypatch.setattr(devices, "_bf16_probe", {})
    monkeypatch.setattr(devices, "_bf16_speedup", lambda: 0.6)
    assert not devices.cpu_trains_faster_in_bf16()


def test_the_bf16_speed_probe_measures_this_cpu():
    speedup = devices._bf16_speedup(rounds=1)
    assert 0 < speedup < float("inf")


def test_training_threads_share_the_physical_cores(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setattr(devices, "physical_cores", lambda: 8)
    try:
        devices.set_training_threads(None, processes=2)
        assert torch.get_num_threads() == 4
        devices.set_training_threads(3, processes=2)
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
