"""Every YAML file in configs/ validates against the model it is written for."""

from __future__ import annotations

from pathlib import Path

import pytest

from miro_core.annotate import AnnotateConfig
from miro_core.config import build_config
from miro_core.train import TrainConfig

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("annotate-*.yaml")), ids=lambda p: p.name)
def test_annotate_configs_validate(path: Path, registry):
    cfg = build_config(AnnotateConfig, path, {"data": "d", "out": "o"})
    for name in cfg.rewards:
        registry.rewards.create(name, cfg.reward_options.get(name))


@pytest.mark.parametrize(
    "path", sorted(p for p in CONFIGS.glob("*.yaml") if not p.name.startswith("annotate-")), ids=lambda p: p.name
)
def test_train_configs_validate(path: Path, registry):
    from miro_core.backbone import parse_backbone_name

    cfg = build_config(TrainConfig, path, {"data": "d"})
    name, options = parse_backbone_name(cfg.backbone, registry.backbones.as_dict())
    registry.backbones.create(name, {**options, **cfg.backbone_options}).size_config()
    registry.text_encoders.create(cfg.text_encoder, cfg.text_encoder_options)
