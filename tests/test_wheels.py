"""The distributions as users install them: ranges not pins, one version source, SPDX licences, complete wheels.

The checks live in scripts/distributions.py (also run by `make lint`, `make wheels-test`); here each one is
shown to catch what it is for on a small made-up project, then run on the repository. The last test builds
every wheel, installs them into a fresh virtual environment and runs miro there.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, as a package (pytest needs it)
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "distributions.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("miro_distributions_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


dists_mod = _load_script()


def _project(root: Path, pyproject: str, files: dict[str, str]) -> object:
    """A made-up distribution under ``root``: its pyproject.toml and source files."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(pyproject)
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return dists_mod.Distribution(root, tomllib.loads(pyproject))


GOOD_PLUGIN = """
[build-system]
requires = ["setuptools>=77"]
build-backend = "setuptools.build_meta"

[project]
name = "miro-demo-plugin"
version = "0.3.0"
license = "Apache-2.0"
requires-python = ">=3.10"
dependencies = ["miro>=0.1,<0.2", "numpy>=1.26"]

[project.entry-points.miro]
demo-plugin = "miro_demo_plugin.plugin"

[tool.setuptools.packages.find]
include = ["miro_demo_plugin*"]
{package_data}
"""
WITH_DATA = """
[tool.setuptools.package-data]
"*" = ["**/*"]
"""
PLUGIN_FILES = {
    "miro_demo_plugin/__init__.py": '"""A plugin."""\n',
    "miro_demo_plugin/plugin.py": 'import numpy\n\nMIRO_API = ">=1,<2"\n',
    "miro_demo_plugin/assets/vocab.json": '{"a": 1}\n',
}


def _core(tmp_path: Path, version: str = "0.1.5") -> object:
    return _project(
        tmp_path / "core",
        f'[project]\nname = "miro"\nversion = "{version}"\nlicense = "Apache-2.0"\ndependencies = []\n',
        {},
    )


# --- each check catches what it is for ----------------------------------------------------------------------


def test_ranges_reject_exact_pins_and_missing_lower_bounds(tmp_path: Path) -> None:
    text = GOOD_PLUGIN.format(package_data="").replace(
        '"numpy>=1.26"', '"numpy>=1.26", "torch==2.14.1", "scipy", "pillow<12"'
    )
    dist = _project(tmp_path / "p", text, PLUGIN_FILES)
    problems = dists_mod.check_ranges([dist])
    assert len(problems) == 3
    assert "pins torch==2.14.1 exactly" in problems[0]
    assert "no lower bound for 'scipy'" in problems[1]
    assert "no lower bound for 'pillow'" in problems[2]
    assert dists_mod.check_ranges([_project(tmp_path / "ok", GOOD_PLUGIN.format(package_data=""), {})]) == []


def test_plugins_must_depend_on_a_core_range_that_admits_the_core(tmp_path: Path) -> None:
    core = _core(tmp_path, "0.2.0")
    plugin = _project(tmp_path / "p", GOOD_PLUGIN.format(package_data=""), PLUGIN_FILES)
    (problem,) = dists_mod.check_internal_dependencies([core, plugin])
    assert "requires miro<0.2,>=0.1, which excludes miro 0.2.0" in problem
    orphan = _project(tmp_path / "o", GOOD_PLUGIN.format(package_data="").replace('"miro>=0.1,<0.2", ', ""), {})
    (problem,) = dists_mod.check_internal_dependencies([_core(tmp_path), orphan])
    assert "must include the core" in problem


def test_one_version_source(tmp_path: Path) -> None:
    files = {**PLUGIN_FILES, "miro_demo_plugin/__init__.py": '__version__ = "0.3.0"\n'}
    dist = _project(tmp_path / "p", GOOD_PLUGIN.format(package_data=""), files)
    (problem,) = dists_mod.check_versions([dist])
    assert "assigns __version__ a literal" in problem and "miro_demo_plugin/__init__.py" in problem
    fallback = {**PLUGIN_FILES, "miro_demo_plugin/__init__.py": '__version__ = "0+unknown"\n'}
    assert dists_mod.check_versions([_project(tmp_path / "q", GOOD_PLUGIN.format(package_data=""), fallback)]) == []
    dynamic = GOOD_PLUGIN.format(package_data="").replace('version = "0.3.0"', 'dynamic = ["version"]')
    (problem,) = dists_mod.check_versions([_project(tmp_path / "r", dynamic, PLUGIN_FILES)])
    assert "static `version" in problem


def test_licence_must_be_an_spdx_string_built_by_a_recent_setuptools(tmp_path: Path) -> None:
    text = (GOOD_PLUGIN.format(package_data="")
            .replace('license = "Apache-2.0"', 'license = { text = "Apache-2.0" }')
            .replace("setuptools>=77", "setuptools>=68"))
    problems = dists_mod.check_license_and_build([_project(tmp_path / "p", text, PLUGIN_FILES)])
    assert any("SPDX expression string" in p for p in problems)
    assert any("setuptools>=77" in p for p in problems)
    bad_id = GOOD_PLUGIN.format(package_data="").replace('"Apache-2.0"', '"Apache 2"')
    (problem,) = dists_mod.check_license_and_build([_project(tmp_path / "q", bad_id, PLUGIN_FILES)])
    assert "not a valid SPDX expression" in problem


def test_an_unlisted_subpackage_is_reported(tmp_path: Path) -> None:
    text = ('[project]\nname = "miro"\nversion = "0.1.0"\n[tool.setuptools]\n'
            'package-dir = { "core_pkg" = "src_core" }\npackages = ["core_pkg"]\n')
    dist = _project(tmp_path / "c", text, {"src_core/__init__.py": "", "src_core/records/__init__.py": ""})
    (problem,) = dists_mod.check_packages_listed([dist])
    assert "package core_pkg.records" in problem and "missing from" in problem


def test_undeclared_imports_are_reported_and_optional_ones_are_not(tmp_path: Path) -> None:
    files = {
        **PLUGIN_FILES,
        "miro_demo_plugin/extra.py": (
            "import os\nimport yaml\n\ntry:\n    import scipy\nexcept ImportError:\n    scipy = None\n"
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import PIL\n"
        ),
    }
    dist = _project(tmp_path / "p", GOOD_PLUGIN.format(package_data=""), files)
    (problem,) = dists_mod.check_imports_declared([dist])
    assert "imports 'yaml' (from pyyaml)" in problem and "does not declare it" in problem


@pytest.mark.slow
def test_a_wheel_without_a_data_file_fails_loudly(tmp_path: Path) -> None:
    """A real build: without package-data setuptools drops assets/vocab.json, and the check names it."""
    lacking = _project(tmp_path / "src" / "lacking", GOOD_PLUGIN.format(package_data=""), PLUGIN_FILES)
    complete_text = GOOD_PLUGIN.format(package_data=WITH_DATA).replace("miro-demo-plugin", "miro-demo-plugin-ok")
    complete = _project(tmp_path / "src" / "complete", complete_text, PLUGIN_FILES)
    out = tmp_path / "wheels"
    dists_mod.build_wheels({"lacking": lacking.root, "complete": complete.root}, out, sys.executable)
    (problem,) = dists_mod.check_wheel(lacking, dists_mod.read_wheel(dists_mod._wheel_of(out, lacking)), lacking.root)
    assert "lacks miro_demo_plugin/assets/vocab.json" in problem
    wheel = dists_mod.read_wheel(dists_mod._wheel_of(out, complete))
    assert dists_mod.check_wheel(complete, wheel, complete.root) == []
    assert wheel.entry_points["miro"] == {"demo-plugin": "miro_demo_plugin.plugin"}
    assert wheel.metadata["License-Expression"] == "Apache-2.0"


def test_the_shared_site_packages_leave_out_the_project_and_editable_installs(tmp_path: Path) -> None:
    site = tmp_path / "site"

    def dist_info(name: str, version: str, record: list[str], editable: bool = False) -> None:
        info = site / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        (info / "RECORD").write_text("".join(f"{r},,\n" for r in record))
        if editable:
            (info / "direct_url.json").write_text(json.dumps({"url": "file:///x", "dir_info": {"editable": True}}))

    dist_info("torch", "2.14.1", ["torch/__init__.py"])
    dist_info("miro", "0.1.0", ["miro_core/__init__.py", "miro_cli/main.py", "../../../bin/miro"])
    dist_info("someone-elses-wip", "0.0.1", ["__editable___wip_finder.py"], editable=True)
    for name in ["torch", "miro_core", "miro_cli", "_miro_helper", "__pycache__"]:
        (site / name).mkdir()
    for name in ["__editable__.miro-0.1.0.pth", "__editable___miro_0_1_0_finder.py", "distutils-precedence.pth",
                 "legacy.egg-link", "six.py"]:
        (site / name).write_text("")
    shared = sorted(p.name for p in dists_mod.shared_entries(site, {"miro"}))
    assert shared == ["_miro_helper", "six.py", "torch", "torch-2.14.1.dist-info"]


# --- the repository ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def repository():
    return dists_mod.discover()


def test_the_repository_passes_every_static_check(repository) -> None:
    results = dists_mod.run_static_checks(repository)
    assert {name: problems for name, problems in results.items() if problems} == {}
    names = {d.name for d in repository}
    assert "miro" in names and len(names) == len(list(ROOT.glob("plugins/*/pyproject.toml"))) + 1


def test_no_distribution_pins_torch_and_the_makefile_still_does(repository) -> None:
    for dist in repository:
        for where, req in dist.requirements():
            if req.name in {"torch", "torchvision"}:
                assert not {s.operator for s in req.specifier} & {"==", "==="}, (dist.label, where, str(req))
    makefile = (ROOT / "Makefile").read_text()
    assert "torch==2.14.1 torchvision==0.29.1" in makefile and "-c $(CONSTRAINTS)" in makefile


def test_constraints_record_this_environment(repository) -> None:
    assert dists_mod.check_constraints(repository) == []
    pins = dists_mod.read_constraints()
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"
    assert not {d.name for d in repository} & set(pins), "the project's own distributions are not constrained"


def test_miro_version_prints_the_distribution_and_api_versions() -> None:
    from miro_cli.main import app
    from miro_core import API_VERSION, __version__

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"miro {importlib.metadata.version('miro')} (plugin API {API_VERSION})"
    core = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert __version__ == core


def test_miro_plugins_shows_each_distribution_version(repository) -> None:
    from miro_cli.main import app

    declared = {d.name: d.version for d in repository}
    result = CliRunner().invoke(app, ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    shown = {e["distribution"]: e["version"] for e in json.loads(result.output)}
    assert shown["miro"] == declared["miro"]
    for dist, version in shown.items():
        if dist in declared:
            assert version == declared[dist], f"{dist} {version} is installed, pyproject.toml says {declared[dist]}"
    assert {"miro-reward-shapes-alignment", "miro-text-minilm"} <= set(shown)


def test_the_demo_recipe_is_package_data() -> None:
    from miro_core import configs

    assert configs.path("demo.yaml") == (ROOT / "configs" / "demo.yaml").resolve()
    with pytest.raises(FileNotFoundError, match="no packaged config 'nope.yaml'"):
        configs.path("nope.yaml")


@pytest.mark.slow
def test_wheels_install_and_run_in_a_fresh_environment(tmp_path: Path) -> None:
    """Build every wheel, install them (not editable) into a new venv sharing .venv's torch, run miro there."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "wheels", "--work", str(tmp_path / "work")],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "wheels ok" in proc.stdout
