"""Built-in ODE samplers on the linear time grid from t = 1 (noise) to t = 0 (data)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from miro_core.hookspecs import Register, hookimpl
from miro_core.sampler import Sampler, VelocityFn

if TYPE_CHECKING:
    import torch


def time_grid(num_steps: int) -> list[float]:
    """``num_steps + 1`` times from 1 down to 0, evenly spaced (MIRO's linear grid)."""
    return [1.0 - i / num_steps for i in range(num_steps + 1)]


class EulerSampler(Sampler):
    """Explicit Euler: x_{t - dt} = x_t - dt v(x_t, t). MIRO's sampler (50 steps)."""

    name = "euler"
    description = "first-order Euler, 1 evaluation per step"

    def sample(self, velocity: VelocityFn, noise: torch.Tensor, num_steps: int) -> torch.Tensor:
        times = time_grid(num_steps)
        x = noise
        for step in range(num_steps):
            t, t_next = times[step], times[step + 1]
            x = x + (t_next - t) * velocity(x, t, step)
        return x


class HeunSampler(Sampler):
    """Heun's second-order method; the last step falls back to Euler (t = 0 needs no correction)."""

    name = "heun"
    description = "second-order Heun, 2 evaluations per step"
    evaluations_per_step = 2

    def sample(self, velocity: VelocityFn, noise: torch.Tensor, num_steps: int) -> torch.Tensor:
        times = time_grid(num_steps)
        x = noise
        for step in range(num_steps):
            t, t_next = times[step], times[step + 1]
            v = velocity(x, t, step)
            x_euler = x + (t_next - t) * v
            if step == num_steps - 1:
                x = x_euler
            else:
                v_next = velocity(x_euler, t_next, step)
                x = x + (t_next - t) * 0.5 * (v + v_next)
        return x


@hookimpl
def register_samplers(register: Register) -> None:
    register(EulerSampler)
    register(HeunSampler)
