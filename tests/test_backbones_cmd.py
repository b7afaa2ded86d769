"""``miro backbones`` and the counting helpers of miro_core.model_stats."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import typer
from typer.testing import CliRunner

from miro_cli import backbones_cmd
from miro_core.backbone import BackboneSpec
from miro_core.model_stats import (
    backbone_stats,
    build_network,
    count_forward_flops,
    count_parameters,
    example_inputs,
)
from miro_core.plugins import build_registry

dit_plugin = pytest.importorskip("miro_backbone_dit.plugin")
mmdit_plugin = pytest.importorskip("miro_backbone_mmdit.plugin")
rin_plugin = pytest.importorskip("miro_backbone_rin.plugin")

PLUGIN_MODULES = [
    "miro_backbone_dit.plugin",
    "miro_backbone_mmdit.plugin",
    "miro_backbone_rin.plugin",
    "miro_autoencoder_sdxl_vae.plugin",
    "miro_text_t5.plugin",
    "miro_text_clip.plugin",
]


@pytest.fixture
def app(monkeypatch):
    import miro_core.plugins

    registry = build_registry(
        load_entry_points=False, extra_plugins=[("dit", dit_plugin), ("mmdit", mmdit_plugin), ("rin", rin_plugin)]
    )
    monkeypatch.setattr(miro_core.plugins, "get_registry", lambda: registry)
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """test app"""

    backbones_cmd.attach(app)
    return app


def _run(app, *args):
    return CliRunner().invoke(app, ["backbones", *args], env={"COLUMNS": "200"})


def test_table_lists_every_size(app):
    result = _run(app, "--no-flops")
    assert result.exit_code == 0, result.output
    for name in ("dit", "mmdit", "rin"):
        assert name in result.output
    for size in ("tiny", "xl", "medium", "large", "miro"):
        assert f" {size} " in result.output
    assert "pooled + tokens" in result.output


def test_json_counts_match_a_real_build(app):
    result = _run(app, "dit-tiny/4", "rin-tiny", "--json", "--image-size", "16", "--cond-dim", "48", "--cond-len", "10")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["backbone"], r["size"], r["patch_size"]) for r in rows] == [("dit", "tiny", 4), ("rin", "tiny", 2)]
    spec = BackboneSpec(in_channels=4, image_size=16, cond_dim=48)
    from miro_backbone_dit.backbone import DiTBackbone

    real = DiTBackbone({"size": "tiny", "patch_size": 4}).build(spec)
    assert rows[0]["parameters"] == count_parameters(real)
    assert rows[0]["flops"] == count_forward_flops(real, spec, cond_len=10, device="cpu")
    assert rows[0]["gflops"] == pytest.approx(rows[0]["flops"] / 1e9)
    assert rows[0]["device"] == "meta"


def test_whole_family_and_published_dit_size(app):
    result = _run(app, "dit", "--json")
    rows = json.loads(result.stdout)
    assert [r["size"] for r in rows] == ["tiny", "s", "b", "l", "xl"]
    xl = rows[-1]
    # DiT-XL/2 (675M) plus one cross-attention layer per block (28 x ~5.3M at cond_dim 1024).
    assert 800e6 < xl["parameters"] < 830e6
    assert 280 < xl["gflops"] < 290


def test_unknown_backbone_is_a_one_line_error(app):
    result = _run(app, "vit-xl")
    assert result.exit_code == 1
    assert "unknown backbone 'vit-xl'" in result.output
    result = _run(app, "dit-huge")
    assert result.exit_code == 1 and "no size 'huge'" in result.output
    result = _run(app, "--image-size", "0")
    assert result.exit_code == 2 and "--image-size" in result.output and "greater than or equal to 1" in result.output


def test_cpu_flop_count_equals_meta_count():
    """On CPU tensors SDPA runs a fused kernel; the registered formula makes both counts agree."""
    from miro_backbone_mmdit.backbone import MMDiTBackbone

    spec = BackboneSpec(in_channels=4, image_size=8, cond_dim=32)
    backbone = MMDiTBackbone({"size": "tiny"})
    meta = count_forward_flops(build_network(backbone, spec, "meta"), spec, cond_len=6)
    cpu = count_forward_flops(build_network(backbone, spec, "cpu"), spec, cond_len=6)
    assert meta == cpu > 0


def test_count_parameters_counts_shared_weights_once():
    layer = torch.nn.Linear(4, 4)
    model = torch.nn.Sequential(layer, layer)
    assert count_parameters(model) == 20
    layer.bias.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == 16


def test_example_inputs_follow_the_contract():
    spec = BackboneSpec(in_channels=3, image_size=8, cond_dim=5)
    x, t, cond = example_inputs(spec, cond_len=8, batch=2)
    assert x.shape == (2, 3, 8, 8) and t.shape == (2,)
    assert cond.tokens.shape == (2, 8, 5) and cond.mask.sum().item() == 12
    meta_x, _, meta_cond = example_inputs(spec, cond_len=8, device="meta")
    assert meta_x.is_meta and meta_cond.tokens.is_meta


def test_stats_fall_back_to_cpu_for_networks_that_fail_on_meta():
    from miro_core.backbone import Backbone

    class NeedsData(torch.nn.Module):
        def __init__(self, spec: BackboneSpec) -> None:
            super().__init__()
            self.proj = torch.nn.Conv2d(spec.in_channels, spec.in_channels, 1)

        def forward(self, x, t, cond):
            if x.is_meta:
                raise NotImplementedError("data-dependent")
            return self.proj(x) * float(t.mean())

    class Toy(Backbone):
        name = "toy"
        sizes = {"tiny": {}}

        def build(self, spec):
            return NeedsData(spec)

    stats = backbone_stats(Toy(), BackboneSpec(in_channels=2, image_size=4, cond_dim=3), cond_len=2)
    assert stats.device == "cpu" and stats.parameters == 6
    assert stats.flops == 2 * 2 * 2 * 16


def test_plugin_and_command_imports_stay_light():
    code = "import sys\n" + "".join(f"import {m}\n" for m in [*PLUGIN_MODULES, "miro_cli.backbones_cmd"])
    code += "heavy = [m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules]\n"
    code += "assert not heavy, heavy\n"
    subprocess.run([sys.executable, "-c", code], check=True)
