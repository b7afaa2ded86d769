"""A throwaway third-party reward, installed as its own package, shows up and annotates by name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PLUGIN_PYPROJECT = """
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "miro-reward-brightness-thirdparty"
version = "9.9.1"
dependencies = []

[project.entry-points.miro]
brightness = "miro_brightness_plugin"

[tool.setuptools]
py-modules = ["miro_brightness_plugin"]
"""

PLUGIN_MODULE = '''
"""A third-party reward: mean brightness of the image."""
from miro_core.hookspecs import hookimpl
from miro_core.rewards import RewardModel

MIRO_API = ">=1,<2"


class Brightness(RewardModel):
    name = "brightness"
    inputs = frozenset({"image"})

    def score(self, images, captions):
        import numpy as np

        return [float(np.asarray(im.convert("L"), dtype=np.float32).mean() / 255) for im in images]


@hookimpl
def register_rewards(register):
    register(Brightness)
'''


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("plugin-src")
    (source / "pyproject.toml").write_text(PLUGIN_PYPROJECT)
    (source / "miro_brightness_plugin.py").write_text(textwrap.dedent(PLUGIN_MODULE))
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    return target


def run_miro(args: list[str], site: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(site), "MIRO_NO_PROGRESS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "miro_cli.main", *args], capture_output=True, text=True, env=env, cwd=cwd
    )


def test_listed_by_miro_plugins(installed_plugin: Path, tmp_path: Path):
    result = run_miro(["plugins", "--json"], installed_plugin, tmp_path)
    assert result.returncode == 0, result.stderr
    entry = next(p for p in json.loads(result.stdout) if p["name"] == "brightness")
    assert entry["distribution"] == "miro-reward-brightness-thirdparty"
    assert entry["version"] == "9.9.1"
    assert entry["hooks"] == ["register_rewards"]
    assert entry["provides"] == {"reward": ["brightness"]}
    assert entry["error"] is None


def test_usable_in_annotate(installed_plugin: Path, tiny_shapes: Path, tmp_path: Path):
    result = run_miro(
        ["annotate", str(tiny_shapes), "--rewards", "brightness,shapes-sharpness", "--out", str(tmp_path / "a")],
        installed_plugin,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    import pyarrow.parquet as pq

    tables = sorted((tmp_path / "a" / "scores").glob("*.parquet"))
    rows = sum(pq.read_table(t).num_rows for t in tables)
    columns = pq.read_table(tables[0]).column_names
    assert rows == 240 and "brightness" in columns
    values = pq.read_table(tables[0]).column("brightness").to_pylist()
    assert all(0.0 <= v <= 1.0 for v in values) and len(set(values)) > 10
