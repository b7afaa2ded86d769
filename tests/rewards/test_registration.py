"""The seven paper rewards are installed plugins: names, metadata, light imports, one clear error each."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from miro_core.errors import MiroError
from miro_core.rewards import RewardOptions

PLUGINS = {
    "aesthetic": "miro_reward_aesthetic.plugin",
    "hpsv2": "miro_reward_hpsv2.plugin",
    "imagereward": "miro_reward_imagereward.plugin",
    "pickscore": "miro_reward_pickscore.plugin",
    "vqascore": "miro_reward_vqascore.plugin",
    "jina-clip": "miro_reward_jina_clip.plugin",
    "sciscore": "miro_reward_sciscore.plugin",
}


def test_all_seven_registered_through_entry_points(registry):
    for name, module in PLUGINS.items():
        assert name in registry.rewards, registry.failures
        assert registry.rewards.provider(name) == name
        cls = registry.rewards.get(name)
        assert importlib.import_module(module).MIRO_API == ">=1,<2"
        assert cls.peak_memory_mib and cls.peak_memory_mib > 500
        assert issubclass(cls.Options, RewardOptions)
        assert {"checkpoint", "batch_size", "raw"} <= set(cls.Options.model_fields)
        assert cls.inputs == (frozenset({"image"}) if name == "aesthetic" else frozenset({"image", "caption"}))
    assert registry.rewards.get("jina-clip").Options().trust_remote_code is False


def test_plugin_modules_import_nothing_heavy():
    code = (
        "import importlib, sys\n"
        f"for m in {list(PLUGINS.values())!r}: importlib.import_module(m)\n"
        "heavy = ('torch', 'transformers', 'open_clip', 'torchvision', 'safetensors')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


@pytest.mark.parametrize("name", sorted(PLUGINS))
def test_unknown_option_is_a_config_error(registry, name):
    with pytest.raises(MiroError, match="checkpointt"):
        registry.rewards.create(name, {"checkpointt": "/x"})


@pytest.mark.parametrize("name", sorted(PLUGINS))
def test_absent_weights_give_missing_weights_error(registry, name, tmp_path, monkeypatch):
    from miro_core.errors import MissingWeightsError

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    extra = {"trust_remote_code": True} if name == "jina-clip" else {}
    reward = registry.rewards.create(name, {"checkpoint": str(tmp_path / "nowhere"), **extra})
    with pytest.raises(MissingWeightsError) as info:
        reward.load()
    assert "nowhere" in str(info.value)
    with pytest.raises(RuntimeError, match="load"):
        reward.score([], [])
