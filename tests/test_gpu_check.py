"""benchmarks/gpu_check.py at toy size on the CPU: the device check's code paths cannot rot between device runs."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_gpu_check_runs_at_tiny_size_on_cpu(tmp_path: Path):
    pytest.importorskip("miro_reward_pickscore")
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    report = module.main(["--tiny", "--work", str(tmp_path / "work"), "--out", str(tmp_path / "report.json")])
    assert (tmp_path / "report.json").exists()
    assert report["backbone"] == "dit-tiny/2" and report["records"]["text_tokens"] == [8, 64]
    assert [t["batch"] for t in report["batch_search"]] == [4, 8] and all(t["fits"] for t in report["batch_search"])
    plain, compiled = report["train"]
    assert not plain["compile"] and compiled["compile"]
    for run in (plain, compiled):
        assert run["batch"] == 8 and run["steps"] == 3 and run["samples_per_s"] > 0
        assert run["train_flops_per_sample"] > 0 and run["mfu"] is None  # no known peak on a CPU
    annotate = report["annotate"]
    assert annotate["images"] == 12 and annotate["images_per_s"] > 0
    assert 0.0 <= annotate["device_wait_share"] <= 1.0
