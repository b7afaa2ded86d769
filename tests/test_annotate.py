"""Annotation: tables, row-level errors, resumption after kill -9, fsspec URLs, 2-process split."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from miro_cli.main import app
from miro_core.annotate import AnnotateConfig, Annotator
from miro_core.data.shards import encode_png
from miro_core.rewards import RewardModel

from .conftest import two_cpu_processes

REWARDS = "shapes-alignment,shapes-aesthetic,shapes-sharpness"


def all_rows(out: Path) -> list[dict]:
    rows = []
    for table in sorted((out / "scores").glob("*.parquet")):
        rows += pq.read_table(table).to_pylist()
    return rows


def all_errors(out: Path) -> list[dict]:
    rows = []
    for table in sorted((out / "errors").glob("*.parquet")):
        rows += pq.read_table(table).to_pylist()
    return rows


def test_cli_writes_one_row_per_sample(tiny_shapes: Path, tmp_path: Path):
    result = CliRunner().invoke(app, ["annotate", str(tiny_shapes), "--rewards", REWARDS, "--out", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    rows = all_rows(tmp_path / "a")
    assert len(rows) == 240 and len({r["key"] for r in rows}) == 240
    assert set(rows[0]) == {"key", "shard", "caption", *REWARDS.split(",")}
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["samples"] == 240 and summary["images_per_second"] > 0
    assert set(summary["reward_seconds"]) == set(REWARDS.split(","))
    assert "images/s" in result.output
    assert 0 <= summary["device_wait_share"] <= 1 and summary["shards"]["finished"] == 3
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["rewards"] == REWARDS.split(",") and config["reward_versions"]
    for name in REWARDS.split(","):
        provenance = config["components"]["rewards"][name]
        assert provenance["distribution"] == f"miro-reward-{name}" and "options" in provenance


class WherePrepared(RewardModel):
    """Scores 1.0 when ``prepare`` ran in another process than ``score_prepared``."""

    name = "where-prepared"

    def prepare(self, image, caption):
        return os.getpid(), image.size[0]

    def score_prepared(self, prepared):
        return [float(pid != os.getpid()) for pid, _ in prepared]

    def score(self, images, captions):
        return self.score_prepared([self.prepare(i, c) for i, c in zip(images, captions)])


@pytest.mark.parametrize("mode", ["all", "sequential"])
def test_workers_give_the_same_tables_as_in_process(tiny_shapes: Path, tmp_path: Path, registry, mode: str):
    names = REWARDS.split(",")
    tables = {}
    for workers in (0, 2):
        out = tmp_path / f"w{workers}"
        cfg = AnnotateConfig(
            data=str(tiny_shapes), out=str(out), rewards=names, workers=workers, batch_size=32, reward_loading=mode
        )
        report = Annotator(cfg, [registry.rewards.create(n) for n in names]).run()
        assert report.stats.workers == workers
        tables[workers] = all_rows(out)
    assert tables[0] == tables[2] and len(tables[0]) == 240


def test_prepare_runs_in_the_workers_on_an_unloaded_copy(tiny_shapes: Path, tmp_path: Path):
    for workers, expected in ((0, 0.0), (2, 1.0)):
        cfg = AnnotateConfig(data=str(tiny_shapes), out=str(tmp_path / f"p{workers}"), rewards=["where-prepared"],
                             workers=workers)
        Annotator(cfg, [WherePrepared()]).run()
        assert {r["where-prepared"] for r in all_rows(tmp_path / f"p{workers}")} == {expected}


class NaNForSquares(RewardModel):
    name = "nan-for-squares"

    def score(self, images, captions):
        if any("explode" in c for c in captions):
            raise RuntimeError("this batch contains a poisoned caption")
        return [float("nan") if "square" in c else 0.5 for c in captions]


class Poisoned(RewardModel):
    name = "poisoned"

    def score(self, images, captions):
        if any("explode" in c for c in captions):
            raise RuntimeError("boom")
        return [1.0] * len(images)


def write_messy_shard(path: Path) -> None:
    from PIL import Image

    image = Image.new("RGB", (16, 16), (200, 10, 10))
    members = [
        ("good1", encode_png(image), "a red square"),
        ("corrupt", b"not a png at all", "a red circle"),
        ("empty", encode_png(image), "   "),
        ("good2", encode_png(image.convert("L")), "a red circle"),
        ("bomb", encode_png(image), "explode please"),
    ]
    with tarfile.open(path, "w") as tar:
        for key, payload, caption in members:
            for name, data in ((f"{key}.png", payload), (f"{key}.txt", caption.encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def test_bad_samples_become_row_level_errors(tmp_path: Path):
    data = tmp_path / "messy"
    data.mkdir()
    write_messy_shard(data / "shard-000000.tar")
    cfg = AnnotateConfig(data=str(data), out=str(tmp_path / "a"), rewards=["nan-for-squares", "poisoned"], batch_size=8)
    Annotator(cfg, [NaNForSquares(), Poisoned()]).run()
    rows = {r["key"]: r for r in all_rows(tmp_path / "a")}
    errors = all_errors(tmp_path / "a")
    assert set(rows) == {"good1", "good2", "bomb"}, "undecodable and empty-caption samples are not scored"
    reasons = {(e["key"], e["stage"]): e["reason"] for e in errors}
    assert "cannot decode image" in reasons[("corrupt", "input")]
    assert reasons[("empty", "input")] == "empty caption"
    assert reasons[("good1", "nan-for-squares")] == "score is NaN"
    assert "boom" in reasons[("bomb", "poisoned")]
    assert rows["good2"]["poisoned"] == 1.0 and rows["good2"]["nan-for-squares"] == 0.5
    assert rows["bomb"]["poisoned"] != rows["bomb"]["poisoned"]  # NaN, the rest of the batch survived


def test_fsspec_url_and_rewards_mismatch(tiny_shapes: Path, tmp_path: Path, registry):
    out = f"file://{tmp_path / 'url-out'}"
    cfg = AnnotateConfig(data=f"file://{tiny_shapes}", out=out, rewards=["shapes-sharpness"])
    Annotator(cfg, [registry.rewards.create("shapes-sharpness")]).run()
    assert len(all_rows(tmp_path / "url-out")) == 240
    result = CliRunner().invoke(
        app, ["annotate", str(tiny_shapes), "--rewards", "shapes-aesthetic", "--out", str(tmp_path / "url-out")]
    )
    assert result.exit_code == 1 and "annotated with rewards" in result.output


def test_sequential_reward_loading_gives_the_same_table(tiny_shapes: Path, tmp_path: Path, registry):
    names = REWARDS.split(",")
    results = {}
    for mode in ("all", "sequential"):
        cfg = AnnotateConfig(data=str(tiny_shapes), out=str(tmp_path / mode), rewards=names, reward_loading=mode)
        Annotator(cfg, [registry.rewards.create(n) for n in names]).run()
        results[mode] = sorted(all_rows(tmp_path / mode), key=lambda r: r["key"])
    assert results["all"] == results["sequential"]


SLOW_ANNOTATE = """
import sys, time
from miro_core.annotate import AnnotateConfig, Annotator
from miro_core.plugins import build_registry
reg = build_registry()
inner = reg.rewards.create("shapes-sharpness")
class Slow(type(inner)):
    def score(self, images, captions):
        time.sleep(0.15)
        return super().score(images, captions)
cfg = AnnotateConfig(data=sys.argv[1], out=sys.argv[2], rewards=["shapes-sharpness"], batch_size=8, flush_every=1)
Annotator(cfg, [Slow()]).run()
"""


def test_resume_after_kill_9_gives_exactly_one_row_per_sample(tiny_shapes: Path, tmp_path: Path):
    out = tmp_path / "killed"
    script = tmp_path / "slow.py"
    script.write_text(SLOW_ANNOTATE)
    process = subprocess.Popen([sys.executable, str(script), str(tiny_shapes), str(out)])
    deadline = time.time() + 60
    while time.time() < deadline:
        finished = list((out / "scores").glob("*.parquet")) if (out / "scores").exists() else []
        parts = list((out / "parts").rglob("rows-*.parquet")) if (out / "parts").exists() else []
        if finished and parts:
            break
        time.sleep(0.1)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert list((out / "parts").rglob("rows-*.parquet")), "the run should have been killed mid-shard"
    rows_before = len(all_rows(out))
    assert 0 < rows_before < 240
    subprocess.run([sys.executable, str(script), str(tiny_shapes), str(out)], check=True)
    keys = [r["key"] for r in all_rows(out)]
    assert len(keys) == 240 and len(set(keys)) == 240
    assert not list((out / "parts").rglob("*.parquet")), "finished shards clean up their parts"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["samples"] == 240 and summary["scored"] == 240, "the summary totals the run across resumes"


@pytest.mark.slow
def test_two_accelerate_processes_split_shards_without_overlap(tiny_shapes: Path, tmp_path: Path):
    out = tmp_path / "dist"
    command = [
        *two_cpu_processes(),
        "annotate",
        str(tiny_shapes),
        "--rewards",
        "shapes-sharpness",
        "--out",
        str(out),
    ]
    env = {**os.environ, "MIRO_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    summaries = [json.loads((out / f"summary-rank{r}.json").read_text()) for r in (0, 1)]
    assert all(s["samples"] > 0 for s in summaries), "both processes must work"
    assert sum(s["samples"] for s in summaries) == 240
    keys = [r["key"] for r in all_rows(out)]
    assert len(keys) == 240 and len(set(keys)) == 240
    summary = json.loads((out / "summary.json").read_text())
    assert summary["samples"] == 240 and summary["runs"] == 2, "summary.json totals both processes"


MEASURE_PEAK = """
import resource, sys
from miro_core.annotate import AnnotateConfig, Annotator
from miro_core.plugins import build_registry
reg = build_registry()
cfg = AnnotateConfig(data=sys.argv[1], out=sys.argv[2], rewards=["shapes-sharpness"], batch_size=32)
Annotator(cfg, [reg.rewards.create("shapes-sharpness")]).run()
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


@pytest.mark.slow
def test_peak_memory_stays_flat_as_shards_grow(tmp_path: Path):
    """Annotating 12 shards must not need more memory than annotating 2 (it streams)."""
    from miro_core.shapes.dataset import write_shapes_dataset

    script = tmp_path / "peak.py"
    script.write_text(MEASURE_PEAK)
    peaks = {}
    for shards in (2, 12):
        data = tmp_path / f"d{shards}"
        write_shapes_dataset(str(data), n=150 * shards, image_size=128, samples_per_shard=150, progress=False)
        result = subprocess.run(
            [sys.executable, str(script), str(data), str(tmp_path / f"a{shards}")],
            capture_output=True,
            text=True,
            check=True,
        )
        peaks[shards] = int(result.stdout.strip().splitlines()[-1]) / 1024
    # 10 more shards hold ~50 MB of decoded pixels; streaming keeps the peak within a few MB.
    assert peaks[12] < peaks[2] + 25, peaks


@pytest.mark.parametrize(
    ("device", "cores", "shards", "expected"),
    [
        ("cpu", 2, 10, 0),
        ("cpu", 4, 10, 1),
        ("cpu", 16, 10, 4),
        ("cuda", 16, 10, 8),
        ("cuda", 16, 3, 3),
        ("cuda", 1, 5, 0),
    ],
)
def test_default_workers(monkeypatch, device, cores, shards, expected):
    from miro_core.annotation.config import auto_workers

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert auto_workers(device, shards) == expected
