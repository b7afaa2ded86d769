"""Shared checks of the backbone forward contract, used by every backbone's test module.

Tests load backbone plugins by importing their plugin module and registering it explicitly
(``build_registry(load_entry_points=False, extra_plugins=...)``), so installed plugins never leak in.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from miro_core.backbone import Backbone, BackboneSpec
from miro_core.conditioning import Conditioning
from miro_core.plugins import build_registry

#: Small input used for the tiny sizes: 4 x 8 x 8 latents, 6 conditioning tokens of width 32.
TINY_SPEC = BackboneSpec(in_channels=4, image_size=8, cond_dim=32)
TINY_COND_LEN = 6


class BackboneChecks:
    """The contract every backbone must follow (see miro_core/backbone.py)."""

    @staticmethod
    def registry_with(name: str, module: Any) -> Any:
        return build_registry(load_entry_points=False, extra_plugins=[(name, module)])

    @staticmethod
    def conditioning(
        batch: int, length: int = TINY_COND_LEN, dim: int = TINY_SPEC.cond_dim, seed: int = 0, masked: int = 2
    ) -> Conditioning:
        gen = torch.Generator().manual_seed(seed)
        tokens = torch.randn(batch, length, dim, generator=gen)
        mask = torch.ones(batch, length, dtype=torch.bool)
        if masked:
            mask[:, length - masked :] = False
        pooled = torch.randn(batch, dim, generator=gen)
        return Conditioning(tokens, mask, pooled)

    @staticmethod
    def inputs(spec: BackboneSpec = TINY_SPEC, batch: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(seed + 1)
        x = torch.randn(batch, spec.in_channels, spec.image_size, spec.image_size, generator=gen)
        t = torch.rand(batch, generator=gen)
        return x, t

    @staticmethod
    def perturb(model: torch.nn.Module, scale: float = 0.05, seed: int = 0) -> torch.nn.Module:
        """Add noise to every parameter, so zero-initialised layers (adaLN-Zero, output heads) carry signal."""
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for param in model.parameters():
                param.add_(scale * torch.randn(param.shape, generator=gen))
        return model

    @staticmethod
    def check_forward_contract(backbone: Backbone, spec: BackboneSpec = TINY_SPEC) -> None:
        torch.manual_seed(0)
        model = BackboneChecks.perturb(backbone.build(spec)).eval()
        x, t = BackboneChecks.inputs(spec)
        cond = BackboneChecks.conditioning(x.shape[0], dim=spec.cond_dim)
        with torch.no_grad():
            out = model(x, t, cond)
            assert out.shape == x.shape
            assert out.dtype == x.dtype
            assert torch.isfinite(out).all()

            # Padded tokens must not matter: overwrite them with large values.
            tokens = cond.tokens.clone()
            tokens[~cond.mask] = 50.0 * torch.randn(int((~cond.mask).sum()), spec.cond_dim)
            same = model(x, t, Conditioning(tokens, cond.mask, cond.pooled))
            torch.testing.assert_close(same, out, atol=1e-5, rtol=1e-5)

            # A real token changes the output (only for the sample it belongs to).
            tokens = cond.tokens.clone()
            tokens[0, 0] += 1.0
            changed = model(x, t, Conditioning(tokens, cond.mask, cond.pooled))
            assert (changed[0] - out[0]).abs().max() > 1e-4
            torch.testing.assert_close(changed[1:], out[1:], atol=1e-5, rtol=1e-5)

            # The pooled vector changes the output.
            pooled = cond.pooled.clone()
            pooled[1] += 1.0
            changed = model(x, t, Conditioning(cond.tokens, cond.mask, pooled))
            assert (changed[1] - out[1]).abs().max() > 1e-4
            torch.testing.assert_close(changed[0], out[0], atol=1e-5, rtol=1e-5)

            # So does the time.
            changed = model(x, t.flip(0) * 0.5, cond)
            assert (changed - out).abs().max() > 1e-4

            # Mask handling is per sample: a batch of one gives the same result as inside the batch.
            single = model(x[2:], t[2:], Conditioning(cond.tokens[2:], cond.mask[2:], cond.pooled[2:]))
            torch.testing.assert_close(single, out[2:], atol=1e-5, rtol=1e-5)

    @staticmethod
    def flow_matching_losses(
        backbone: Backbone, spec: BackboneSpec = TINY_SPEC, steps: int = 30, batch: int = 8, lr: float = 2e-3
    ) -> list[float]:
        """Train on one fixed batch (data, noise and times fixed) with x_t = (1-t) x0 + t eps, target eps - x0."""
        torch.manual_seed(0)
        model = backbone.build(spec).train()
        gen = torch.Generator().manual_seed(1)
        # Structured data: a smooth per-sample pattern the network can fit.
        base = torch.linspace(-1, 1, spec.image_size)
        x0 = (base[None, None, :, None] * base[None, None, None, :]).repeat(batch, spec.in_channels, 1, 1)
        x0 = x0 * torch.randn(batch, spec.in_channels, 1, 1, generator=gen)
        eps = torch.randn(x0.shape, generator=gen)
        t = torch.rand(batch, generator=gen)
        cond = BackboneChecks.conditioning(batch, dim=spec.cond_dim, seed=2)
        x_t = (1 - t[:, None, None, None]) * x0 + t[:, None, None, None] * eps
        target = eps - x0
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
        losses = []
        for _ in range(steps):
            loss = torch.nn.functional.mse_loss(model(x_t, t, cond), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        return losses

    @staticmethod
    def check_safetensors_round_trip(backbone: Backbone, spec: BackboneSpec = TINY_SPEC) -> None:
        from safetensors.torch import load, save

        torch.manual_seed(0)
        model = BackboneChecks.perturb(backbone.build(spec)).eval()
        blob = save({k: v.contiguous() for k, v in model.state_dict().items()})
        torch.manual_seed(123)
        other = backbone.build(spec).eval()
        missing, unexpected = other.load_state_dict(load(blob), strict=True)
        assert not missing and not unexpected
        x, t = BackboneChecks.inputs(spec)
        cond = BackboneChecks.conditioning(x.shape[0], dim=spec.cond_dim)
        with torch.no_grad():
            torch.testing.assert_close(other(x, t, cond), model(x, t, cond))


@pytest.fixture
def checks() -> type[BackboneChecks]:
    return BackboneChecks
