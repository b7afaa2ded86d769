"""The ODE sampler contract: integrate the velocity field from noise (t = 1) to data (t = 0)."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

from miro_core.component import Component

if TYPE_CHECKING:
    import torch

#: ``velocity(x, t, step) -> v`` with ``t`` a float in [0, 1] and ``step`` the 0-based step index.
VelocityFn = Callable[["torch.Tensor", float, int], "torch.Tensor"]


class Sampler(Component):
    """A fixed-grid ODE solver over the linear time grid ``1 = t_0 > ... > t_N = 0``."""

    #: Velocity evaluations per step (for cost reports).
    evaluations_per_step: ClassVar[int] = 1

    @classmethod
    def kind(cls) -> str:
        return "sampler"

    @abstractmethod
    def sample(self, velocity: VelocityFn, noise: torch.Tensor, num_steps: int) -> torch.Tensor:
        """Return ``x_0`` from ``x_1 = noise``."""
