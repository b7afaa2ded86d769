"""Flow-matching path, targets, time sampling, preconditioning, and the ODE samplers."""

from __future__ import annotations

import math

import pytest
import torch

from miro_core.flow import input_scale, interpolate, per_sample_mse, sample_time, shift_time, velocity_target


def test_path_endpoints_and_target():
    x0, noise = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    assert torch.allclose(interpolate(x0, noise, torch.zeros(3)), x0)
    assert torch.allclose(interpolate(x0, noise, torch.ones(3)), noise)
    t = torch.tensor([0.25, 0.5, 0.75])
    x_t = interpolate(x0, noise, t)
    assert torch.allclose(x_t[1], 0.5 * x0[1] + 0.5 * noise[1])
    # d x_t / d t = noise - x0 is the velocity target
    eps = 1e-3
    derivative = (interpolate(x0, noise, t + eps) - interpolate(x0, noise, t - eps)) / (2 * eps)
    assert torch.allclose(derivative, velocity_target(x0, noise), atol=1e-3)


def test_time_sampling_distributions():
    g = torch.Generator().manual_seed(0)
    logit_normal = sample_time(20000, "logit-normal", g)
    uniform = sample_time(20000, "uniform", g)
    assert 0 < logit_normal.min() and logit_normal.max() < 1
    logits = torch.log(logit_normal / (1 - logit_normal))
    assert abs(logits.mean()) < 0.03 and abs(logits.std() - 1) < 0.03
    assert abs(uniform.mean() - 0.5) < 0.01 and abs(uniform.var() - 1 / 12) < 0.003


def test_time_shift_matches_sd3_formula():
    t = torch.tensor([0.0, 0.25, 0.5, 1.0])
    # s t / (1 + (s - 1) t) by hand for s = 2 and s = 0.5
    assert torch.allclose(shift_time(t, 2.0), torch.tensor([0.0, 0.4, 2 / 3, 1.0]))
    assert torch.allclose(shift_time(t, 0.5), torch.tensor([0.0, 1 / 7, 1 / 3, 1.0]))
    assert torch.equal(shift_time(t, 1.0), t)
    # the shift divides the signal-to-noise ratio ((1 - t) / t)^2 by s^2
    snr = lambda x: ((1 - x) / x) ** 2  # noqa: E731
    assert torch.isclose(snr(shift_time(torch.tensor(0.3), 3.0)), snr(torch.tensor(0.3)) / 9)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    shifted = sample_time(100, "logit-normal", g1, shift=2.0)
    assert torch.allclose(shifted, shift_time(sample_time(100, "logit-normal", g2), 2.0))
    with pytest.raises(ValueError, match="positive"):
        shift_time(t, 0.0)


def test_input_scale_normalises_x_t():
    sigma = 0.5
    x0, noise = torch.randn(200000) * sigma, torch.randn(200000)
    for t in (0.1, 0.5, 0.9):
        x_t = (1 - t) * x0 + t * noise
        scaled = x_t * input_scale(torch.tensor(t), sigma)
        assert abs(float(scaled.std()) - 1.0) < 0.01


def test_per_sample_mse():
    a, b = torch.zeros(2, 1, 2, 2), torch.ones(2, 1, 2, 2)
    b[1] *= 2
    assert torch.allclose(per_sample_mse(a, b), torch.tensor([1.0, 4.0]))


def test_euler_is_exact_on_straight_paths(registry):
    x0, noise = torch.randn(4, 3), torch.randn(4, 3)
    velocity = lambda x, t, step: noise - x0  # noqa: E731 - the true straight-path velocity
    out = registry.samplers.create("euler").sample(velocity, noise, num_steps=3)
    assert torch.allclose(out, x0, atol=1e-6)


def test_heun_is_second_order(registry):
    # dx/dt = x has x(0) = x(1) / e; Heun's error shrinks ~4x per halving of the step, Euler's ~2x.
    velocity = lambda x, t, step: x  # noqa: E731
    exact = 1 / math.e

    def error(name: str, steps: int) -> float:
        out = registry.samplers.create(name).sample(velocity, torch.ones(1), num_steps=steps)
        return abs(float(out) - exact)

    # Heun's last step falls back to Euler, so compare the interior behaviour with many steps
    assert error("heun", 40) < error("euler", 40) / 5
    assert error("euler", 20) / error("euler", 40) > 1.8
