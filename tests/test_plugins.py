"""The plugin manager: built-ins through hooks, duplicates, misspelled hooks, broken plugins, env vars."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from importlib.metadata import EntryPoint

import pytest

from miro_core.errors import DuplicateNameError, PluginError, UnknownComponentError
from miro_core.hookspecs import hookimpl
from miro_core.plugins import build_registry
from miro_core.rewards import RewardModel


def make_reward(name: str) -> type[RewardModel]:
    class _Reward(RewardModel):
        inputs = frozenset({"image"})

        def score(self, images, captions):
            return [1.0] * len(images)

    _Reward.name = name
    return _Reward


def plugin_module(name: str, api: str | None = ">=1,<2", **hooks) -> types.ModuleType:
    module = types.ModuleType(name)
    if api is not None:
        module.MIRO_API = api
    for hook_name, function in hooks.items():
        setattr(module, hook_name, hookimpl(function))
    return module


def rewards_hook(*names: str):
    def register_rewards(register):
        for name in names:
            register(make_reward(name))

    return register_rewards


def test_builtins_register_through_hooks():
    reg = build_registry(load_entry_points=False)
    assert {"quantile", "uniform"} <= set(reg.binners)
    assert {"none", "cfg", "miro", "isolate", "tradeoff"} <= set(reg.guidance)
    assert {"euler", "heun"} <= set(reg.samplers)
    assert "pixels" in reg.autoencoders
    assert all(p.distribution == "miro" for p in reg.plugins)


def test_third_party_module_registers_and_reports_provides():
    module = plugin_module("good", register_rewards=rewards_hook("fancy"))
    reg = build_registry(load_entry_points=False, extra_plugins=[("good", module)])
    assert reg.rewards.create("fancy").score([None, None], ["a", "b"]) == [1.0, 1.0]
    info = next(p for p in reg.plugins if p.name == "good")
    assert info.provides == {"reward": ["fancy"]} and info.hooks == ["register_rewards"] and info.error is None


def test_duplicate_name_is_a_clear_error_and_other_plugins_survive():
    first = plugin_module("first", register_rewards=rewards_hook("same"))
    second = plugin_module("second", register_rewards=rewards_hook("same", "other"))
    reg = build_registry(load_entry_points=False, extra_plugins=[("first", first), ("second", second)])
    failed = next(p for p in reg.plugins if p.name == "second")
    assert "registered twice" in failed.error and "'first'" in failed.error
    assert "other" not in reg.rewards, "a failing plugin registers nothing"
    assert "same" in reg.rewards


def test_duplicate_is_fatal_in_strict_mode(monkeypatch):
    monkeypatch.setenv("MIRO_STRICT_PLUGINS", "1")
    first = plugin_module("first", register_rewards=rewards_hook("same"))
    second = plugin_module("second", register_rewards=rewards_hook("same"))
    with pytest.raises(PluginError, match="registered twice"):
        build_registry(load_entry_points=False, extra_plugins=[("first", first), ("second", second)])


def test_misspelled_hook_is_caught_by_check_pending():
    module = plugin_module("typo", register_reward=rewards_hook("x"))  # missing "s"
    reg = build_registry(load_entry_points=False, extra_plugins=[("typo", module)])
    failed = next(p for p in reg.plugins if p.name == "typo")
    assert "unknown hook" in failed.error and "register_reward" in failed.error


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
    assert "not a subclass" in next(p for p in reg.plugins if p.name == "bad").error


def test_import_failure_is_reported_and_strict_mode_raises(monkeypatch):
    broken = EntryPoint(name="broken", value="miro_no_such_module_xyz", group="miro")
    reg = build_registry(entry_point_list=[broken])
    failed = next(p for p in reg.plugins if p.name == "broken")
    assert failed.error.startswith("import failed: ModuleNotFoundError")
    monkeypatch.setenv("MIRO_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="broken"):
        build_registry(entry_point_list=[broken])


def test_entry_point_must_name_a_module():
    pointing_at_class = EntryPoint(name="cls", value="miro_core.builtin.binners:QuantileBinner", group="miro")
    reg = build_registry(entry_point_list=[pointing_at_class])
    assert "must name a module" in next(p for p in reg.plugins if p.name == "cls").error


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


def test_duplicate_name_error_type():
    reg = build_registry(load_entry_points=False)
    with pytest.raises(DuplicateNameError):
        reg.binners.add(reg.binners.get("quantile"), "again")


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
