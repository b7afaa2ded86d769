"""Built-in ODE samplers on the linear time grid from t = 1 (noise) to t = 0 (data).

Both carry the velocity's state (self-conditioning latents) from each evaluation to the next, as the
released MIRO sampler does; Heun's corrector gets the predictor's state, and the next step the corrector's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from miro_core.hookspecs import Register, hookimpl
from miro_core.sampler import Sampler, StatefulVelocityFn

if TYPE_CHECKING:
    import torch


def time_grid(num_steps: int) -> list[float]:
    """``num_steps + 1`` times from 1 down to 0, evenly spaced (MIRO's linear grid).

    Computed in float32 as the released sampler computes it (``1 - i / N``), so its samples are reproduced
    bit for bit.
    """
    import torch

    return (1 - torch.arange(num_steps + 1, dtype=torch.float32) / num_steps).tolist()


def step_size(t: float, t_next: float) -> float:
    """``t_next - t`` as the released sampler computes it: the float32 difference of ``gamma = 1 - t``
    (clamped at 1e-9), negated."""
    import torch

    gamma = torch.tensor([1 - t, 1 - t_next], dtype=torch.float32).clamp(min=1e-9)
    return -float(gamma[1] - gamma[0])


class EulerSampler(Sampler):
    """Explicit Euler: x_{t - dt} = x_t - dt v(x_t, t). MIRO's sampler (50 steps)."""

    name = "euler"
    description = "first-order Euler, 1 evaluation per step"

    def integrate(self, velocity: StatefulVelocityFn, noise: torch.Tensor, num_steps: int) -> torch.Tensor:
        times = time_grid(num_steps)
        x, state = noise, None
        for step in range(num_steps):
            t, t_next = times[step], times[step + 1]
            v, state = velocity(x, t, step, state)
            x = x + step_size(t, t_next) * v
        return x


class HeunSampler(Sampler):
    """Heun's second-order method; the last step falls back to Euler (t = 0 needs no correction)."""

    name = "heun"
    description = "second-order Heun, 2 evaluations per step"
    evaluations_per_step = 2

    def integrate(self, velocity: StatefulVelocityFn, noise: torch.Tensor, num_steps: int) -> torch.Tensor:
        times = time_grid(num_steps)
        x, state = noise, None
        for step in range(num_steps):
            t, t_next = times[step], times[step + 1]
            v, state = velocity(x, t, step, state)
            dt = step_size(t, t_next)
            x_euler = x + dt * v
            if step == num_steps - 1:
                x = x_euler
            else:
                v_next, state = velocity(x_euler, t_next, step, state)
                x = x + dt * 0.5 * (v + v_next)
        return x


@hookimpl
def register_samplers(register: Register) -> None:
    register(EulerSampler)
    register(HeunSampler)
