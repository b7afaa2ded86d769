"""The plugin manager: built-ins through hooks, name conflicts, misspelled and undecorated hooks, broken plugins
(even ones calling sys.exit), strict mode, plugin folders, load times, env vars."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
import types
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from miro_core.errors import DuplicateNameError, PluginError, UnknownComponentError
from miro_core.hookspecs import hookimpl
from miro_core.plugins import build_registry, check_strict
from miro_core.rewards import RewardModel


def make_reward(name: str, value: float = 1.0) -> type[RewardModel]:
    class _Reward(RewardModel):
        inputs = frozenset({"image"})

        def score(self, images, captions):
            return [value] * len(images)

    _Reward.name = name
    return _Reward


def plugin_module(name: str, api: str | None = ">=1,<2", distribution: str | None = None, **hooks) -> types.ModuleType:
    module = types.ModuleType(name)
    if api is not None:
        module.MIRO_API = api
    if distribution is not None:
        module.__distribution__ = distribution
    for hook_name, function in hooks.items():
        setattr(module, hook_name, hookimpl(function))
    return module


def rewards_hook(*names: str, value: float = 1.0):
    def register_rewards(register):
        for name in names:
            register(make_reward(name, value))

    return register_rewards


def plugin(reg, name):
    return next(p for p in reg.plugins if p.name == name)


def test_builtins_register_through_hooks():
    reg = build_registry(load_entry_points=False)
    assert {"quantile", "uniform"} <= set(reg.binners)
    assert {"none", "cfg", "miro", "isolate", "tradeoff"} <= set(reg.guidance)
    assert {"euler", "heun"} <= set(reg.samplers)
    assert "pixels" in reg.autoencoders
    assert all(p.distribution == "miro" and p.source == "built-in" for p in reg.plugins)
    assert reg.problems() == []


def test_third_party_module_registers_and_reports_provides():
    module = plugin_module("good", register_rewards=rewards_hook("fancy"))
    reg = build_registry(load_entry_points=False, extra_plugins=[("good", module)])
    assert reg.rewards.create("fancy").score([None, None], ["a", "b"]) == [1.0, 1.0]
    info = plugin(reg, "good")
    assert info.provides == {"reward": ["fancy"]} and info.hooks == ["register_rewards"] and info.error is None
    assert info.load_seconds >= 0 and info.slow is None and info.conflicts == [] and info.warnings == []


# -- the same name from two distributions --------------------------------------------------------------------------
def two_providers():
    first = plugin_module("first", distribution="dist-a", register_rewards=rewards_hook("same", value=1.0))
    second = plugin_module("second", distribution="dist-b", register_rewards=rewards_hook("same", "other", value=0.0))
    return build_registry(load_entry_points=False, extra_plugins=[("first", first), ("second", second)])


def test_a_name_from_two_distributions_is_an_error_when_used_naming_both():
    reg = two_providers()
    assert plugin(reg, "first").error is None and plugin(reg, "second").error is None, "neither is 'broken'"
    assert "other" in reg.rewards, "the second plugin's other names are registered"
    assert reg.rewards.names().count("same") == 1 and "same" in reg.rewards
    for use in (lambda: reg.rewards.get("same"), lambda: reg.rewards.create("same"),
                lambda: reg.provenance("rewards", "same"), lambda: reg.rewards.as_dict()["same"]):
        with pytest.raises(DuplicateNameError) as caught:
            use()
        message = str(caught.value)
        assert "dist-a" in message and "dist-b" in message
        assert "'dist-a:same'" in message and "'dist-b:same'" in message and "MIRO_BLOCK_PLUGINS" in message


def test_a_qualified_name_picks_one_everywhere():
    reg = two_providers()
    assert reg.rewards.create("dist-a:same").score([None], ["x"]) == [1.0]
    assert reg.rewards.create("dist-b:same").score([None], ["x"]) == [0.0]
    assert reg.rewards.create("second:same").score([None], ["x"]) == [0.0], "the plugin name qualifies too"
    assert "dist-a:same" in reg.rewards and "dist-c:same" not in reg.rewards
    assert reg.rewards.as_dict()["dist-b:same"] is reg.rewards.get("dist-b:same")
    with pytest.raises(UnknownComponentError, match="provided by: dist-a:same, dist-b:same"):
        reg.rewards.get("dist-c:same")
    assert reg.rewards.create("dist-b:other").name == "other"
    assert reg.binners.get("miro:quantile").name == "quantile"


def test_provenance_names_the_distribution_of_a_qualified_name():
    reg = two_providers()
    record = reg.provenance("rewards", "dist-b:same")
    assert record == {"name": "same", "version": "1", "plugin": "second", "distribution": "dist-b",
                      "distribution_version": "test"}
    assert reg.provenance("binners", "quantile")["distribution"] == "miro"


def test_miro_plugins_shows_both_as_conflicting_not_broken():
    reg = two_providers()
    first, second = plugin(reg, "first"), plugin(reg, "second")
    assert first.error is None and second.error is None
    assert len(first.conflicts) == 1 and "dist-b" in first.conflicts[0] and "'dist-a:same'" in first.conflicts[0]
    assert len(second.conflicts) == 1 and "dist-a" in second.conflicts[0]
    assert any("provided by more than one distribution" in p for p in reg.problems())


def test_a_plugin_that_sorts_first_never_replaces_a_builtin():
    from miro_core.builtin.binners import UniformBinner

    class Impostor(UniformBinner):
        name = "quantile"

    impostor = plugin_module("aaa", distribution="aaa-impostor", register_binners=lambda register: register(Impostor))
    reg = build_registry(load_entry_points=False, extra_plugins=[("aaa", impostor)])
    with pytest.raises(DuplicateNameError, match="aaa-impostor") as caught:
        reg.binners.get("quantile")
    assert reg.binners.get("miro:quantile").__module__ == "miro_core.builtin.binners"
    message = str(caught.value)  # built-ins always load: the way out is the qualified name or blocking the plugin
    assert "MIRO_BLOCK_PLUGINS=aaa-impostor" in message and "MIRO_BLOCK_PLUGINS=miro" not in message
    assert "'miro:quantile'" in message and "built-in components cannot be blocked" in message


def test_conflicts_are_fatal_in_strict_mode(monkeypatch):
    reg = two_providers()
    check_strict(reg)  # not strict: nothing raised
    monkeypatch.setenv("MIRO_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="provided by more than one distribution"):
        check_strict(reg)


def test_one_plugin_registering_a_name_twice_fails_alone():
    twice = plugin_module("twice", register_rewards=rewards_hook("x", "x"))
    reg = build_registry(load_entry_points=False, extra_plugins=[("twice", twice)])
    assert "registers reward 'x' twice" in plugin(reg, "twice").error and "x" not in reg.rewards


def test_names_with_separators_are_refused():
    bad = plugin_module("bad", register_rewards=rewards_hook("a:b"))
    reg = build_registry(load_entry_points=False, extra_plugins=[("bad", bad)])
    assert "may not contain" in plugin(reg, "bad").error


# -- hooks ---------------------------------------------------------------------------------------------------------
def test_misspelled_decorated_hook_is_caught_by_check_pending_with_a_suggestion():
    module = plugin_module("typo", register_reward=rewards_hook("x"))  # missing "s"
    reg = build_registry(load_entry_points=False, extra_plugins=[("typo", module)])
    error = plugin(reg, "typo").error
    assert "unknown hook" in error and "register_reward" in error and "did you mean register_rewards?" in error


@pytest.mark.parametrize("function_name", ["register_rewards", "register_reward", "registr_rewards"])
def test_undecorated_functions_that_look_like_hooks_are_reported(function_name, monkeypatch):
    module = plugin_module("forgot", register_binners=lambda register: None)
    setattr(module, function_name, rewards_hook("never"))  # no @hookimpl: pluggy never calls it
    module.register_helper = lambda: None  # not hook-like: not reported
    reg = build_registry(load_entry_points=False, extra_plugins=[("forgot", module)])
    info = plugin(reg, "forgot")
    assert info.error is None and len(info.warnings) == 1
    assert f"{function_name}()" in info.warnings[0] and "@hookimpl" in info.warnings[0]
    if function_name != "register_rewards":
        assert "rename it to register_rewards" in info.warnings[0]
    monkeypatch.setenv("MIRO_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="never called"):
        check_strict(reg)


def test_api_version_mismatch_and_missing_declaration():
    old = plugin_module("old", api=">=0.1,<1", register_rewards=rewards_hook("old-r"))
    silent = plugin_module("silent", api=None, register_rewards=rewards_hook("silent-r"))
    reg = build_registry(load_entry_points=False, extra_plugins=[("old", old), ("silent", silent)])
    errors = {p.name: p.error for p in reg.plugins}
    assert "needs miro plugin API >=0.1,<1" in errors["old"]
    assert "declares no MIRO_API" in errors["silent"]
    assert "old-r" not in reg.rewards and "silent-r" not in reg.rewards


def test_registering_a_non_component_fails_the_plugin():
    def register_rewards(register):
        register(object)

    reg = build_registry(
        load_entry_points=False, extra_plugins=[("bad", plugin_module("bad", register_rewards=register_rewards))]
    )
    assert "not a subclass" in plugin(reg, "bad").error


def test_a_hook_calling_sys_exit_fails_only_its_plugin():
    def register_rewards(register):
        sys.exit(3)

    exiting = plugin_module("exiting", register_rewards=register_rewards)
    good = plugin_module("good", register_rewards=rewards_hook("fine"))
    reg = build_registry(load_entry_points=False, extra_plugins=[("exiting", exiting), ("good", good)])
    assert "SystemExit(3)" in plugin(reg, "exiting").error and "fine" in reg.rewards


# -- importing -----------------------------------------------------------------------------------------------------
def write_module(folder: Path, name: str, body: str) -> Path:
    path = folder / f"{name}.py"
    path.write_text(textwrap.dedent(body))
    return path


GOOD_FILE = """
from miro_core.hookspecs import hookimpl
from miro_core.rewards import RewardModel

MIRO_API = ">=1,<2"


class Dev(RewardModel):
    name = "{name}"
    inputs = frozenset({{"image"}})

    def score(self, images, captions):
        return [0.5] * len(images)


@hookimpl
def register_rewards(register):
    register(Dev)
"""


def test_import_failure_and_system_exit_at_import_are_reported(tmp_path, monkeypatch):
    write_module(tmp_path, "miro_test_exits_at_import", "import sys\nsys.exit('bye')\n")
    write_module(tmp_path, "miro_test_raises_base", "class Odd(BaseException):\n    pass\nraise Odd('odd')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    eps = [
        EntryPoint(name="broken", value="miro_no_such_module_xyz", group="miro"),
        EntryPoint(name="exits", value="miro_test_exits_at_import", group="miro"),
        EntryPoint(name="odd", value="miro_test_raises_base", group="miro"),
    ]
    reg = build_registry(entry_point_list=eps)
    assert plugin(reg, "broken").error.startswith("import failed: ModuleNotFoundError")
    assert plugin(reg, "exits").error == "import failed: SystemExit('bye'): the plugin called sys.exit()"
    assert plugin(reg, "odd").error == "import failed: Odd: odd"
    assert "quantile" in reg.binners, "the built-ins still load"
    monkeypatch.setenv("MIRO_STRICT_PLUGINS", "1")
    reg = build_registry(entry_point_list=eps)  # loading itself never raises
    with pytest.raises(PluginError, match="3 plugin problem"):
        check_strict(reg)


def test_keyboard_interrupt_at_import_is_not_swallowed(tmp_path, monkeypatch):
    write_module(tmp_path, "miro_test_interrupts", "raise KeyboardInterrupt\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        build_registry(entry_point_list=[EntryPoint(name="ki", value="miro_test_interrupts", group="miro")])


def test_entry_point_must_name_a_module():
    pointing_at_class = EntryPoint(name="cls", value="miro_core.builtin.binners:QuantileBinner", group="miro")
    reg = build_registry(entry_point_list=[pointing_at_class])
    assert "must name a module" in plugin(reg, "cls").error


def test_load_and_block_environment_variables(monkeypatch):
    eps = [
        EntryPoint(name="shapes-sharpness", value="miro_reward_shapes_sharpness.plugin", group="miro"),
        EntryPoint(name="shapes-aesthetic", value="miro_reward_shapes_aesthetic.plugin", group="miro"),
    ]
    monkeypatch.setenv("MIRO_LOAD_PLUGINS", "shapes-sharpness")
    assert build_registry(entry_point_list=eps).rewards.names() == ["shapes-sharpness"]
    monkeypatch.setenv("MIRO_LOAD_PLUGINS", "")
    assert build_registry(entry_point_list=eps).rewards.names() == []
    monkeypatch.delenv("MIRO_LOAD_PLUGINS")
    monkeypatch.setenv("MIRO_BLOCK_PLUGINS", "shapes-aesthetic")
    assert build_registry(entry_point_list=eps).rewards.names() == ["shapes-sharpness"]


def test_unknown_component_lists_what_is_installed():
    reg = build_registry(load_entry_points=False)
    with pytest.raises(UnknownComponentError, match="installed: quantile, uniform"):
        reg.binners.get("nope")


# -- plugin folders ------------------------------------------------------------------------------------------------
def test_plugins_dir_loads_modules_without_packaging(tmp_path, monkeypatch):
    folder = tmp_path / "dev"
    folder.mkdir()
    write_module(folder, "miro_dev_reward_one", GOOD_FILE.format(name="dev-one"))
    write_module(folder, "_private_helper", "raise RuntimeError('never imported')\n")
    monkeypatch.setenv("MIRO_PLUGINS_DIR", str(folder))
    reg = build_registry(entry_point_list=[])
    assert reg.rewards.create("dev-one").score([None], ["x"]) == [0.5]
    info = plugin(reg, "miro_dev_reward_one")
    assert info.source.endswith("miro_dev_reward_one.py") and info.version == "dev" and info.error is None
    assert reg.provenance("rewards", "dev-one")["distribution"] == "miro_dev_reward_one"
    monkeypatch.setenv("MIRO_BLOCK_PLUGINS", "miro_dev_reward_one")
    assert "dev-one" not in build_registry(entry_point_list=[]).rewards


def test_plugins_dir_reads_a_project_pyproject(tmp_path, monkeypatch):
    project = tmp_path / "miro-reward-dev"
    (project / "miro_reward_dev").mkdir(parents=True)
    (project / "miro_reward_dev" / "__init__.py").write_text("")
    write_module(project / "miro_reward_dev", "plugin", GOOD_FILE.format(name="dev-two"))
    (project / "pyproject.toml").write_text(
        '[project]\nname = "miro-reward-dev"\nversion = "0.3.0"\n\n'
        '[project.entry-points.miro]\ndev-two = "miro_reward_dev.plugin"\n'
    )
    monkeypatch.syspath_prepend(str(tmp_path))  # sys.path is restored after the test
    reg = build_registry(load_entry_points=False, plugins_dirs=[project])
    assert reg.provenance("rewards", "dev-two") == {
        "name": "dev-two", "version": "1", "plugin": "dev-two", "distribution": "miro-reward-dev",
        "distribution_version": "0.3.0",
    }
    missing = build_registry(load_entry_points=False, plugins_dirs=[tmp_path / "nope"])
    assert any("does not exist" in (p.error or "") for p in missing.plugins)


def test_a_slow_plugin_is_flagged(monkeypatch):
    def register_rewards(register):
        time.sleep(0.6)
        register(make_reward("sleepy"))

    reg = build_registry(load_entry_points=False,
                         extra_plugins=[("sleepy", plugin_module("sleepy", register_rewards=register_rewards))])
    info = plugin(reg, "sleepy")
    assert info.load_seconds >= 0.6 and "took" in info.slow and info.error is None
    assert plugin(reg, "binners").slow is None

    from typer.testing import CliRunner

    import miro_core.plugins
    from miro_cli.main import app

    monkeypatch.setattr(miro_core.plugins, "loaded_registry", lambda: reg)
    table = CliRunner().invoke(app, ["plugins"]).output
    assert "SLOW" in table and "slow: took" in " ".join(table.split())


def test_miro_plugins_names_a_plugin_that_imports_torch(tmp_path):
    """In a fresh process: `miro plugins` reports the heavy import and the load time, and stays fast otherwise."""
    folder = tmp_path / "slow"
    folder.mkdir()
    write_module(folder, "miro_heavy_plugin", "import torch  # noqa\n" + GOOD_FILE.format(name="heavy"))
    env = {**__import__("os").environ, "MIRO_PLUGINS_DIR": str(folder)}
    result = subprocess.run([sys.executable, "-m", "miro_cli.main", "plugins", "--json"], capture_output=True,
                            text=True, env=env, check=True)
    entries = {e["name"]: e for e in json.loads(result.stdout)}
    heavy = entries["miro_heavy_plugin"]
    assert heavy["heavy_imports"] == ["torch"] and "imports torch at load time" in heavy["slow"]
    assert all(not e["heavy_imports"] for name, e in entries.items() if name != "miro_heavy_plugin")


def test_cli_starts_without_heavy_imports():
    code = (
        "import sys, json; from typer.testing import CliRunner; from miro_cli.main import app; "
        "r = CliRunner().invoke(app, ['plugins', '--json']); assert r.exit_code == 0, r.output; "
        "heavy = [m for m in ('torch', 'transformers', 'open_clip', 'diffusers', 'webdataset') if m in sys.modules]; "
        "print(json.dumps({'heavy': heavy, 'plugins': len(json.loads(r.stdout))}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["heavy"] == [], f"`miro plugins` imported heavy libraries: {report['heavy']}"
    assert report["plugins"] > 4


# -- contracts enforced where a plugin's result is used ------------------------------------------------------------
def unruly_guidance_registry():
    """Strategies breaking the guidance contract, from one distribution."""
    from miro_core.guidance import GuidanceStrategy

    class NanWeight(GuidanceStrategy):
        name = "nan-weight"

        def scale_at(self, step, num_steps):
            return float("nan") if step == num_steps - 1 else 1.0

    class MissingKey(GuidanceStrategy):
        name = "missing-key"

        def negative_targets(self, reward_keys, positive, negative):
            return {key: 0.0 for key in reward_keys[1:]}

    class OutOfRange(GuidanceStrategy):
        name = "out-of-range"

        def negative_targets(self, reward_keys, positive, negative):
            return {key: -0.5 for key in reward_keys}

    def register_guidance_strategies(register):
        for cls in (NanWeight, MissingKey, OutOfRange):
            register(cls)

    module = plugin_module(
        "unruly", distribution="dist-unruly", register_guidance_strategies=register_guidance_strategies
    )
    return build_registry(load_entry_points=False, extra_plugins=[("unruly", module)])


def test_a_guidance_strategy_breaking_its_contract_fails_before_sampling_naming_it():
    import torch

    from miro_core.pipeline import MiroPipeline
    from miro_core.sampling import Branch, guided_sample

    reg = unruly_guidance_registry()
    pipe = types.SimpleNamespace(reward_keys=["a", "b"], accepted_reward_keys=["a", "b"], config={}, registry=reg)
    for name, problem in (("missing-key", "missing a"), ("out-of-range", "a=-0.5 is outside [0, 1]")):
        with pytest.raises(PluginError) as caught:
            MiroPipeline.resolve_targets(pipe, {}, {}, reg.guidance.create(name))
        assert f"guidance strategy '{name}' (dist-unruly test)" in str(caught.value) and problem in str(caught.value)
    positive, negative = MiroPipeline.resolve_targets(pipe, {"a": 0.5}, {}, reg.guidance.create("miro"))
    assert positive == {"a": 0.5, "b": 1.0} and negative == {"a": 0.0, "b": 0.0}

    calls = []

    def model(x, t, tokens, mask, levels):
        calls.append(x.shape[0])
        return x

    branch = Branch(torch.zeros(1, 2, 4), torch.ones(1, 2, dtype=torch.bool), torch.zeros(1, 2))
    with pytest.raises(PluginError, match=r"'nan-weight' .*scale_at\(3, 4\) returned nan"):
        guided_sample(model, torch.zeros(1, 1, 2, 2), branch, branch, reg.guidance.create("nan-weight"),
                      reg.samplers.create("euler"), 4)
    assert calls == [], "checked before the first model evaluation"


def plugin_level_rule_binner(transform):
    """A binner from 'dist-levels' with its own level rule ``transform(binner, values)``."""
    import numpy as np

    from miro_core.binning import Binner

    class OwnRule(Binner):
        name = "own-rule"

        def fit_edges(self, values):
            return np.quantile(values, np.linspace(0, 1, self.num_bins))

        def transform(self, values):
            return transform(self, values)

    module = plugin_module("levels", distribution="dist-levels", register_binners=lambda register: register(OwnRule))
    return build_registry(load_entry_points=False, extra_plugins=[("levels", module)])


@pytest.mark.parametrize(
    ("transform", "problem"),
    [
        (lambda binner, values: super(type(binner), binner).transform(values) * 2 - 0.5, "outside [0, 1]"),
        (lambda binner, values: super(type(binner), binner).transform(values)[:-1], "levels shaped"),
    ],
)
def test_a_binner_whose_levels_break_the_contract_fails_naming_it(tiny_annotations, tmp_path, transform, problem):
    from miro_core.bins import BinsFile, fit_bins

    with pytest.raises(PluginError) as caught:
        fit_bins(str(tiny_annotations), num_bins=8, strategy="own-rule", registry=plugin_level_rule_binner(transform))
    assert "binner 'own-rule' (dist-levels test) broke the binner contract" in str(caught.value)
    assert problem in str(caught.value)
    # a file fitted while the rule was right, read back with the rule broken (a plugin update): refused on load
    good = plugin_level_rule_binner(lambda binner, values: super(type(binner), binner).transform(values))
    fitted = fit_bins(str(tiny_annotations), num_bins=8, strategy="own-rule", registry=good)
    assert fitted.meta["levels_rule"] == "plugin"
    fitted.save(str(tmp_path / "bins.json"))
    with pytest.raises(PluginError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        BinsFile.load(str(tmp_path / "bins.json"), registry=plugin_level_rule_binner(transform))


def test_a_component_whose_constructor_raises_is_named_with_its_distribution():
    """Not "unexpected RuntimeError ... probably a bug": the plugin is named, so the user knows whose it is."""

    class Boom(make_reward("boom")):
        def __init__(self, options=None):
            raise RuntimeError("init boom")

    def register_rewards(register):
        register(Boom)

    module = plugin_module("boomer", distribution="boom-dist", register_rewards=register_rewards)
    reg = build_registry(load_entry_points=False, extra_plugins=[("boomer", module)])
    expected = r"reward 'boom' from boom-dist .* failed to initialise: RuntimeError: init boom"
    with pytest.raises(PluginError, match=expected):
        reg.rewards.create("boom")
