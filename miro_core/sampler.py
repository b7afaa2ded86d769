"""The ODE sampler contract: integrate the velocity field from noise (t = 1) to data (t = 0).

A solver receives a *stateful* velocity, ``velocity(x, t, step, state) -> (v, state)``, and hands the
returned state to its next evaluation (``state`` is None at the first one). The state is opaque to the
solver: guided sampling keeps in it the networks' self-conditioning latents, one per guidance branch
(:func:`miro_core.sampling.guided_sample`). Built-in solvers implement :meth:`Sampler.integrate`.

Solvers written against the first, stateless contract implement only :meth:`Sampler.sample` with
``velocity(x, t, step) -> v``; they keep working: :meth:`Sampler.integrate` then runs them with a velocity
that carries the state of the latest evaluation to the next one.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from miro_core.component import Component

if TYPE_CHECKING:
    import torch

#: ``velocity(x, t, step) -> v`` with ``t`` a float in [0, 1] and ``step`` the 0-based step index.
VelocityFn = Callable[["torch.Tensor", float, int], "torch.Tensor"]
#: ``velocity(x, t, step, state) -> (v, state)``: the same, carrying state between evaluations.
StatefulVelocityFn = Callable[["torch.Tensor", float, int, Any], "tuple[torch.Tensor, Any]"]


class Sampler(Component):
    """A fixed-grid ODE solver over the linear time grid ``1 = t_0 > ... > t_N = 0``.

    Implement :meth:`integrate` (stateful contract) or :meth:`sample` (stateless contract); either one
    provides the other.
    """

    #: Velocity evaluations per step (for cost reports).
    evaluations_per_step: ClassVar[int] = 1

    @classmethod
    def kind(cls) -> str:
        return "sampler"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not inspect.isabstract(cls) and cls.integrate is Sampler.integrate and cls.sample is Sampler.sample:
            raise TypeError(f"sampler {cls.__name__} must implement integrate() or sample()")

    def integrate(self, velocity: StatefulVelocityFn, noise: torch.Tensor, num_steps: int) -> torch.Tensor:
        """Return ``x_0`` from ``x_1 = noise``, handing each evaluation's state to the next.

        The default runs a stateless :meth:`sample`, carrying the state of the latest evaluation.
        """
        carried: list[Any] = [None]

        def stateless(x: torch.Tensor, t: float, step: int) -> torch.Tensor:
            v, carried[0] = velocity(x, t, step, carried[0])
            return v

        return self.sample(stateless, noise, num_steps)

    def sample(self, velocity: VelocityFn, noise: torch.Tensor, num_steps: int) -> torch.Tensor:
        """Return ``x_0`` from ``x_1 = noise`` for a stateless velocity (the first contract)."""
        return self.integrate(lambda x, t, step, state: (velocity(x, t, step), state), noise, num_steps)
