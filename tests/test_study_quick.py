"""benchmarks/shapes_study.py: its helpers compute right, and --quick runs every part and writes every file."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PLOTS = ("convergence.png", "best_of_n.png", "control.png", "compositional.png", "samples.png")
MODELS = ["baseline", "miro", "only-alignment", "only-aesthetic", "only-sharpness"]


def load_study():
    spec = importlib.util.spec_from_file_location("shapes_study", ROOT / "benchmarks" / "shapes_study.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["shapes_study"] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_milestones_crossings_and_best_of_n_matching():
    study = load_study()
    assert study.milestone_steps(320, 10, range(10, 321, 10)) == [10, 20, 30, 40, 60, 80, 120, 160, 240, 320]
    assert study.milestone_steps(100, 25, [25, 75, 100]) == [25, 75, 100], "only steps that have a checkpoint"
    steps, values = [10, 20, 40], [0.1, 0.3, 0.5]
    assert study.steps_to_reach(steps, values, 0.4) == (30.0, False), "interpolated between 20 and 40"
    assert study.steps_to_reach(steps, values, 0.3) == (20.0, False)
    assert study.steps_to_reach(steps, values, 0.05) == (10.0, True), "reached at the first checkpoint: a bound"
    assert study.steps_to_reach(steps, values, 0.6) == (None, False)
    assert study.smallest_n_reaching([1, 2, 4, 8], [0.1, 0.2, 0.25, 0.3], 0.22) == 4
    assert study.smallest_n_reaching([1, 2], [0.1, 0.2], 0.5) is None
    assert study.is_monotone([0.1, 0.1, 0.3]) and not study.is_monotone([0.1, 0.3, 0.2])
    assert study.is_monotone([0.1, 0.3, 0.29], tolerance=0.02)


def test_quick_settings_shrink_every_budget():
    study = load_study()
    full, quick = study.Settings(), study.quick_settings(study.Settings())
    assert quick.quick and quick.results_md is None and quick.threads == 1
    for key in ("samples", "minutes_per_run", "best_of", "bench_per_category", "sample_steps", "checkpoints"):
        assert getattr(quick, key) < getattr(full, key), key


@pytest.mark.slow
def test_quick_study_writes_every_table_and_plot(tmp_path: Path):
    study = load_study()
    results_md = tmp_path / "results.md"
    results_md.write_text(f"# Results\n\nsetup\n\n{study.BLOCK_BEGIN}\nold tables\n{study.BLOCK_END}\n\nanalysis kept")
    docs = tmp_path / "docs" / "results"
    results = study.main(["--quick", "--samples", "200", "--out", str(tmp_path / "study"), "--docs", str(docs),
                          "--results-md", str(results_md)])
    for name in PLOTS:
        assert (docs / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    summary = (docs / "summary.md").read_text()
    for heading in ("### Convergence", "### Best-of-N", "### Control", "### Compositional benchmark", "### Cost"):
        assert heading in summary, heading
    for name in PLOTS:
        assert f"]({name})" in summary, f"summary.md links {name} next to it"
    stored = json.loads((docs / "study.json").read_text())
    assert set(stored["compositional"]["models"]) == set(MODELS)
    assert {info["steps"] for info in stored["training"].values()} == {stored["calibration"]["steps"]}
    assert set(stored["best_of_n"]["curves"]["baseline"]["sizes"]) == {1, 2, 4}
    assert stored["control"]["values"] == [0.0, 0.5, 1.0]
    assert all(f"train {m}" in results["seconds"] for m in MODELS) and results["seconds"]["total"] > 0
    for name in ("baseline", "miro"):
        curve = stored["convergence"]["curves"][name]
        assert len(curve["steps"]) >= 3 and curve["steps"][-1] == stored["calibration"]["steps"]
        assert all(0.0 <= v <= 1.0 for v in curve["shapes-aesthetic"])
        # milestones keep only their EMA weights; the final checkpoint stays whole
        checkpoints = sorted((tmp_path / "study" / "runs" / name / "checkpoints").glob("step-*"))
        assert len(checkpoints) == len(curve["steps"])
        assert not (checkpoints[0] / "optimizer.pt").exists() and (checkpoints[0] / "model_ema.safetensors").exists()
        assert (checkpoints[-1] / "optimizer.pt").exists()
    page = results_md.read_text()
    assert "old tables" not in page and "analysis kept" in page and "setup" in page
    assert "](docs/results/convergence.png)" in page and "### Compositional benchmark" in page
