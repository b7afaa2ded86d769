"""Throwaway third-party plugins, each installed as its own distribution, through the CLI.

- a reward (brightness) that shows up in `miro plugins` and annotates by name;
- two distributions that both register `colorfulness`: conflicting, never silently replaced, picked by
  `DIST:NAME` or by blocking one;
- a guidance strategy and a binner used by `miro bins fit`, `miro sample` and `miro eval`, recorded with
  their distributions in every config.json;
- broken plugins (sys.exit at import, a hook without @hookimpl) that never break the CLI, and strict mode.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

HEADER = """
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"
"""


def pyproject(dist: str, version: str, entry: str, module: str) -> str:
    return HEADER + textwrap.dedent(f"""
        [project]
        name = "{dist}"
        version = "{version}"
        dependencies = []

        [project.entry-points.miro]
        {entry} = "{module}"

        [tool.setuptools]
        py-modules = ["{module}"]
    """)


BRIGHTNESS = '''
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

COLORFUL = '''
from miro_core.hookspecs import hookimpl
from miro_core.rewards import RewardModel

MIRO_API = ">=1,<2"


class Colorfulness(RewardModel):
    name = "colorfulness"
    inputs = frozenset({"image"})

    def score(self, images, captions):
        return [VALUE] * len(images)


@hookimpl
def register_rewards(register):
    register(Colorfulness)
'''

HALFWAY = '''
"""A third-party guidance strategy: the negative branch asks for one fixed level of every reward."""
from pydantic import Field

from miro_core.guidance import GuidanceOptions, GuidanceStrategy
from miro_core.hookspecs import hookimpl

MIRO_API = ">=1,<2"


class HalfwayOptions(GuidanceOptions):
    level: float = Field(0.5, ge=0.0, le=1.0)


class Halfway(GuidanceStrategy):
    name = "halfway"
    Options = HalfwayOptions

    def negative_targets(self, reward_keys, positive, negative):
        return {key: float(self.options.level) for key in reward_keys}


@hookimpl
def register_guidance_strategies(register):
    register(Halfway)
'''

ROBUST = '''
"""A third-party binner: equal-width edges between two percentiles."""
from miro_core.binning import Binner, BinnerOptions
from miro_core.hookspecs import hookimpl

MIRO_API = ">=1,<2"


class RobustOptions(BinnerOptions):
    low: float = 5.0
    high: float = 95.0


class Robust(Binner):
    name = "robust"
    Options = RobustOptions

    def fit_edges(self, values):
        import numpy as np

        low, high = np.percentile(values, [self.options.low, self.options.high])
        return np.linspace(low, high, self.num_bins)


@hookimpl
def register_binners(register):
    register(Robust)
'''

UNRULY = '''
"""Guidance strategies that break the contract: the engine refuses them before sampling, naming them."""
from miro_core.guidance import GuidanceStrategy
from miro_core.hookspecs import hookimpl

MIRO_API = ">=1,<2"


class NanWeights(GuidanceStrategy):
    name = "nan-weights"

    def scale_at(self, step, num_steps):
        return float("nan")


class NoKeys(GuidanceStrategy):
    name = "no-keys"

    def negative_targets(self, reward_keys, positive, negative):
        return {}


@hookimpl
def register_guidance_strategies(register):
    register(NanWeights)
    register(NoKeys)
'''

EXITS = '''
import sys

sys.exit("this plugin exits at import")
'''

UNDECORATED = '''
from miro_core.rewards import RewardModel

MIRO_API = ">=1,<2"


class Never(RewardModel):
    name = "never"

    def score(self, images, captions):
        return [0.0] * len(images)


def register_reward(register):  # misspelled and not decorated: pluggy would never call it
    register(Never)
'''

GOOD = {
    "brightness": ("miro-reward-brightness-thirdparty", "9.9.1", "miro_brightness_plugin", BRIGHTNESS),
    "colorfulness-a": ("miro-reward-colorful-a", "1.0.0", "miro_colorful_a", COLORFUL.replace("VALUE", "0.25")),
    "colorfulness-b": ("miro-reward-colorful-b", "2.0.0", "miro_colorful_b", COLORFUL.replace("VALUE", "0.75")),
    "halfway": ("miro-guidance-halfway-thirdparty", "0.3.0", "miro_halfway_plugin", HALFWAY),
    "robust": ("miro-binner-robust-thirdparty", "0.4.0", "miro_robust_plugin", ROBUST),
    # loads cleanly; its strategies break the contract only when used
    "unruly": ("miro-guidance-unruly", "0.0.1", "miro_unruly_plugin", UNRULY),
}
BROKEN = {
    "exits": ("miro-plugin-exits", "0.1.0", "miro_exits_plugin", EXITS),
    "undecorated": ("miro-plugin-undecorated", "0.1.0", "miro_undecorated_plugin", UNDECORATED),
}


def install(packages: dict[str, tuple[str, str, str, str]], root: Path) -> Path:
    """Each package as its own distribution, all installed into one --target folder with one pip call."""
    sources = []
    for entry, (dist, version, module, code) in packages.items():
        # the two colorfulness distributions use the same entry point name, as independent authors would
        entry_name = "colorfulness" if entry.startswith("colorfulness") else entry
        source = root / dist
        source.mkdir()
        (source / "pyproject.toml").write_text(pyproject(dist, version, entry_name, module))
        (source / f"{module}.py").write_text(textwrap.dedent(code))
        sources.append(str(source))
    target = root / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target",
         str(target), *sources],
        check=True, capture_output=True,
    )
    return target


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install(GOOD, tmp_path_factory.mktemp("good-plugins"))


@pytest.fixture(scope="module")
def broken_plugins(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install(BROKEN, tmp_path_factory.mktemp("broken-plugins"))


def run_miro(args: list[str], site: Path, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PYTHONPATH": str(site), "MIRO_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1", **env}
    return subprocess.run(
        [sys.executable, "-m", "miro_cli.main", *args], capture_output=True, text=True, env=full, cwd=cwd
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_listed_by_miro_plugins(installed_plugin: Path, tmp_path: Path):
    result = run_miro(["plugins", "--json"], installed_plugin, tmp_path)
    assert result.returncode == 0, result.stderr
    entry = next(p for p in json.loads(result.stdout) if p["name"] == "brightness")
    assert entry["distribution"] == "miro-reward-brightness-thirdparty"
    assert entry["version"] == "9.9.1"
    assert entry["hooks"] == ["register_rewards"]
    assert entry["provides"] == {"reward": ["brightness"]}
    assert entry["error"] is None and entry["conflicts"] == [] and entry["slow"] is None
    assert entry["load_seconds"] < 0.5


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


def test_a_reward_option_applies_to_a_qualified_reward(installed_plugin: Path, tiny_shapes: Path, tmp_path: Path):
    out = tmp_path / "a"
    result = run_miro(
        ["annotate", str(tiny_shapes), "--rewards", "miro-reward-colorful-b:colorfulness", "--reward-option",
         "colorfulness.batch_size=16", "--out", str(out)],
        installed_plugin, tmp_path,
    )
    assert result.returncode == 0, result.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["reward_options"] == {"miro-reward-colorful-b:colorfulness": {"batch_size": 16}}
    recorded = config["components"]["rewards"]["colorfulness"]
    assert recorded["distribution"] == "miro-reward-colorful-b" and recorded["options"]["batch_size"] == 16
    wrong = run_miro(["annotate", str(tiny_shapes), "--rewards", "brightness", "--reward-option",
                      "colorfulness.batch_size=16", "--out", str(tmp_path / "b")], installed_plugin, tmp_path)
    assert "--reward-option names reward(s) not in --rewards: colorfulness" in one_error_line(wrong)


# -- one name, two distributions ----------------------------------------------------------------------------------
def test_two_distributions_with_one_name_are_both_shown_as_conflicting(installed_plugin: Path, tmp_path: Path):
    entries = json.loads(run_miro(["plugins", "--json"], installed_plugin, tmp_path).stdout)
    colourful = [e for e in entries if e["name"] == "colorfulness"]
    assert {e["distribution"] for e in colourful} == {"miro-reward-colorful-a", "miro-reward-colorful-b"}
    for entry in colourful:
        assert entry["error"] is None, "neither is reported as broken"
        assert entry["provides"] == {"reward": ["colorfulness"]}
        assert len(entry["conflicts"]) == 1 and "also provided by" in entry["conflicts"][0]
    table = run_miro(["plugins"], installed_plugin, tmp_path).stdout
    assert "conflict:" in table


def test_using_the_conflicting_name_is_an_error_naming_both(installed_plugin: Path, tiny_shapes: Path,
                                                            tmp_path: Path):
    result = run_miro(["annotate", str(tiny_shapes), "--rewards", "colorfulness", "--out", str(tmp_path / "a")],
                      installed_plugin, tmp_path)
    line = one_error_line(result)
    assert "miro-reward-colorful-a" in line and "miro-reward-colorful-b" in line
    assert "miro-reward-colorful-b:colorfulness" in line and "MIRO_BLOCK_PLUGINS" in line
    assert not (tmp_path / "a" / "scores").exists() or not list((tmp_path / "a" / "scores").glob("*.parquet"))


def test_blocking_one_distribution_picks_the_other(installed_plugin: Path, tiny_shapes: Path, tmp_path: Path):
    result = run_miro(["annotate", str(tiny_shapes), "--rewards", "colorfulness", "--out", str(tmp_path / "a")],
                      installed_plugin, tmp_path, MIRO_BLOCK_PLUGINS="miro-reward-colorful-a")
    assert result.returncode == 0, result.stderr
    import pyarrow.parquet as pq

    table = pq.read_table(sorted((tmp_path / "a" / "scores").glob("*.parquet"))[0])
    assert set(table.column("colorfulness").to_pylist()) == {0.75}


def test_the_qualified_name_works_in_the_registry_of_an_installed_set(installed_plugin: Path, tmp_path: Path):
    code = (
        "from miro_core.plugins import build_registry; r = build_registry(); "
        "print(r.rewards.create('miro-reward-colorful-a:colorfulness').score([None], ['x'])[0], "
        "r.provenance('rewards', 'miro-reward-colorful-b:colorfulness')['distribution_version'])"
    )
    env = {**os.environ, "PYTHONPATH": str(installed_plugin)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["0.25", "2.0.0"]


# -- a third-party binner and guidance strategy through bins, train, sample and eval ------------------------------
TRAIN_CONFIG = """
backbone: hybrid-tiny
text_encoder_options: {max_length: 12}
cond_dim: 32
cond_heads: 2
mixer_layers: 1
registers: 4
fourier_channels: 16
batch_size: 8
steps: 2
warmup_steps: 1
save_every: 2
log_every: 1
guidance_scale: 1.5
device: cpu
"""


@pytest.fixture
def in_process(installed_plugin: Path, monkeypatch: pytest.MonkeyPatch):
    """The installed plugins visible to this process's registry (CliRunner runs commands without new imports)."""
    import importlib

    from miro_core.plugins import reset_registry

    monkeypatch.syspath_prepend(str(installed_plugin))
    importlib.invalidate_caches()
    reset_registry()
    yield
    reset_registry()


def invoke(args: list[str]) -> str:
    from typer.testing import CliRunner

    from miro_cli.main import app

    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.slow
def test_third_party_binner_and_guidance_through_every_stage(in_process, tiny_annotations: Path, tmp_path: Path):
    bins = tmp_path / "bins.json"
    invoke(["bins", "fit", str(tiny_annotations), "--out", str(bins), "--bins", "8", "--strategy", "robust"])
    assert json.loads(bins.read_text())["strategy"] == "robust"

    (tmp_path / "train.yaml").write_text(TRAIN_CONFIG)
    invoke(["train", "--config", str(tmp_path / "train.yaml"), "--data", str(tiny_annotations), "--bins", str(bins),
            "--out", str(tmp_path / "run"), "--quiet"])
    run_components = json.loads((tmp_path / "run" / "config.json").read_text())["components"]
    assert run_components["binner"]["distribution"] == "miro-binner-robust-thirdparty"
    assert run_components["backbone"]["distribution"] == "miro-backbone-hybrid"

    samples = tmp_path / "samples"
    invoke(["sample", str(tmp_path / "run"), "--out", str(samples), "--prompt", "a red circle", "--n", "2", "--steps",
            "2", "--strategy", "halfway", "--strategy-option", "level=0.25"])
    config = json.loads((samples / "config.json").read_text())
    assert config["strategy"] == "halfway" and config["strategy_options"] == {"level": 0.25}
    assert set(config["negative_reward_targets"].values()) == {0.25}, "the strategy's targets are recorded"
    assert config["guidance"] == 1.5
    assert config["components"]["guidance"]["distribution"] == "miro-guidance-halfway-thirdparty"
    assert config["components"]["guidance"]["distribution_version"] == "0.3.0"

    invoke(["eval", str(tmp_path / "run"), "--out", str(tmp_path / "eval"), "--n", "1", "--per-category", "1",
            "--steps", "2", "--strategy", "halfway", "--strategy-option", "level=0.75", "--guidance", "2"])
    config = json.loads((tmp_path / "eval" / "config.json").read_text())
    assert config["strategy_used"] == "halfway" and config["guidance_used"] == 2.0
    assert set(config["negative_reward_targets_used"].values()) == {0.75}
    assert config["components"]["guidance"]["distribution"] == "miro-guidance-halfway-thirdparty"
    assert config["reward_choice"]["origin"] == "run" and set(config["rewards"]) == set(config["reward_keys"])

    # the sample folder is measured with the run's rewards too
    output = invoke(["eval", str(samples), "--out", str(tmp_path / "eval-samples")])
    assert "the run's own rewards" in output

    # strategies breaking the contract are refused before anything is sampled or written, naming them
    from typer.testing import CliRunner

    from miro_cli.main import app

    for command, strategy, problem in (("sample", "nan-weights", "scale_at(0, 2) returned nan"),
                                       ("sample", "no-keys", "missing"), ("eval", "nan-weights", "returned nan")):
        out = tmp_path / f"{command}-{strategy}"
        extra = ["--prompt", "a red circle"] if command == "sample" else ["--per-category", "1"]
        result = CliRunner().invoke(app, [command, str(tmp_path / "run"), "--out", str(out), "--n", "1", "--steps",
                                          "2", "--strategy", strategy, *extra])
        assert result.exit_code == 1, result.output
        assert f"guidance strategy '{strategy}' (miro-guidance-unruly 0.0.1) broke the guidance contract" in (
            result.output) and problem in result.output and "Traceback" not in result.output
        assert not out.exists()


# -- broken plugins and strict mode --------------------------------------------------------------------------------
def test_broken_plugins_never_break_the_cli(broken_plugins: Path, tmp_path: Path):
    result = run_miro(["plugins", "--json"], broken_plugins, tmp_path)
    assert result.returncode == 0, result.stderr
    entries = {e["name"]: e for e in json.loads(result.stdout)}
    assert entries["exits"]["error"] == (
        "import failed: SystemExit('this plugin exits at import'): the plugin called sys.exit()"
    )
    warning = entries["undecorated"]["warnings"][0]
    assert "register_reward()" in warning and "@hookimpl" in warning and "rename it to register_rewards" in warning
    assert entries["shapes-sharpness"]["error"] is None
    other = run_miro(["bins", "show", str(tmp_path / "missing.json")], broken_plugins, tmp_path)
    assert "does not exist" in one_error_line(other)


def test_strict_mode_prints_the_table_and_exits_1(broken_plugins: Path, tmp_path: Path):
    result = run_miro(["plugins"], broken_plugins, tmp_path, MIRO_STRICT_PLUGINS="1")
    line = one_error_line(result)
    assert "MIRO_STRICT_PLUGINS=1 and 2 plugin problem(s)" in line and "exits" in line
    assert "miro plugins" in result.stdout and "shapes-sharpness" in result.stdout, "the table is printed first"
    result = run_miro(["plugins", "--json"], broken_plugins, tmp_path, MIRO_STRICT_PLUGINS="1")
    assert result.returncode == 1 and json.loads(result.stdout)
    result = run_miro(["annotate", str(tmp_path), "--rewards", "shapes-sharpness", "--out", str(tmp_path / "a")],
                      broken_plugins, tmp_path, MIRO_STRICT_PLUGINS="1")
    assert "MIRO_STRICT_PLUGINS=1" in one_error_line(result)
