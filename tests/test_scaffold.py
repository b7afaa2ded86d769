"""`miro plugins new KIND NAME` writes a working plugin package: it loads through --plugins-dir without
installing, passes the conformance kit, installs with pip, and its own test passes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from miro_cli.main import app
from miro_core.scaffold import KINDS

runner = CliRunner()


def new(kind: str, name: str, out: Path) -> Path:
    result = runner.invoke(app, ["plugins", "new", kind, name, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out / f"miro-{kind}-{name}"


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_the_package_loads_from_plugins_dir_and_conforms(kind: str, tmp_path: Path, monkeypatch):
    folder = new(kind, f"my-{kind}", tmp_path)
    package = f"miro_{kind}_my_{kind}"
    assert (folder / "pyproject.toml").is_file() and (folder / "tests" / "test_conformance.py").is_file()
    assert (folder / package / "plugin.py").is_file() and (folder / package / f"{kind}.py").is_file()
    monkeypatch.syspath_prepend(str(folder))  # undone after the test (module names are unique per kind)
    before = os.environ.get("MIRO_PLUGINS_DIR")
    result = runner.invoke(app, ["--plugins-dir", str(folder), "plugins", "--json"])
    assert result.exit_code == 0, result.output
    assert os.environ.get("MIRO_PLUGINS_DIR") == before, "--plugins-dir applies to one invocation only"
    entry = next(e for e in json.loads(result.stdout) if e["distribution"] == f"miro-{kind}-my-{kind}")
    assert entry["error"] is None and entry["warnings"] == [] and entry["slow"] is None, entry
    assert entry["version"] == "0.1.0" and list(entry["provides"].values()) == [[f"my-{kind}"]]

    import importlib

    from miro_core import conformance

    plugin = importlib.import_module(f"{package}.plugin")
    options = {"binner": {"num_bins": 8}}.get(kind)
    reports = conformance.check_plugin(plugin, {f"my-{kind}": options} if options else None)
    assert len(reports) == 1 and not reports[0].failed


def test_names_and_existing_folders_are_checked(tmp_path: Path):
    bad = runner.invoke(app, ["plugins", "new", "reward", "Bad Name", "--out", str(tmp_path)])
    assert bad.exit_code == 1 and "NAME 'Bad Name'" in bad.output
    kind = runner.invoke(app, ["plugins", "new", "scorer", "x", "--out", str(tmp_path)])
    assert kind.exit_code == 1 and "choose one of reward, binner, guidance, backbone" in kind.output
    new("reward", "twice", tmp_path)
    again = runner.invoke(app, ["plugins", "new", "reward", "twice", "--out", str(tmp_path)])
    assert again.exit_code == 1 and "already exists" in again.output
    assert runner.invoke(app, ["plugins", "new", "reward", "twice", "--out", str(tmp_path), "--force"]).exit_code == 0


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["reward", "binner", "guidance", "backbone"])
def test_the_generated_test_passes_after_pip_install(kind: str, tmp_path: Path):
    folder = new(kind, "fresh", tmp_path)
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(folder)], check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(target), "OMP_NUM_THREADS": "1"}
    listed = subprocess.run([sys.executable, "-m", "miro_cli.main", "plugins", "--json"], capture_output=True,
                            text=True, env=env, check=True)
    entry = next(e for e in json.loads(listed.stdout) if e["name"] == "fresh")
    assert entry["error"] is None and entry["distribution"] == f"miro-{kind}-fresh"
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist"],
                           cwd=folder, capture_output=True, text=True, env=env)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "2 passed" in tests.stdout
