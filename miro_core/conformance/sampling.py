"""Contract checks of guidance strategies and ODE samplers."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from miro_core.conformance.runner import REWARD_KEYS, CheckRun, Report, SkipCheck, check_common, require
from miro_core.errors import MiroError


# -- guidance strategies -------------------------------------------------------------------------------------------
def check_guidance(
    cls: type[Any],
    options: Mapping[str, Any] | None = None,
    *,
    reward_keys: Sequence[str] = REWARD_KEYS,
    light_import: bool = True,
    raise_on_failure: bool = True,
) -> Report:
    """Check a :class:`~miro_core.guidance.GuidanceStrategy` subclass: negative targets, weights, combine."""
    from miro_core.guidance import GuidanceStrategy

    options = dict(options or {})
    run = CheckRun(cls)
    if not check_common(run, cls, GuidanceStrategy, options, light_import):
        return run.finish(raise_on_failure)
    keys = list(reward_keys)

    def has_scale() -> None:
        require("scale" in cls.Options.model_fields, "Options has no `scale` field (extend GuidanceOptions)")

    def targets() -> None:
        strategy = cls(options)
        for positive_value, negative_value in ((1.0, 0.0), (0.25, 0.75)):
            positive = {k: positive_value for k in keys}
            negative = {k: negative_value for k in keys}
            copies = (dict(positive), dict(negative), list(keys))
            result = strategy.negative_targets(keys, positive, negative)
            require((positive, negative, keys) == copies, "negative_targets() modified its arguments")
            require(isinstance(result, Mapping), f"negative_targets() returned {type(result).__name__}, not a dict")
            require(set(result) == set(keys), f"negative targets for {sorted(result)}, expected {sorted(keys)}")
            for key, value in result.items():
                require(
                    isinstance(value, (int, float)) and 0.0 <= float(value) <= 1.0,
                    f"negative target {key}={value!r} is not in [0, 1]",
                )
            again = strategy.negative_targets(keys, positive, negative)
            require(again == result, "negative_targets() is not deterministic")

    def no_rewards() -> None:
        try:
            result = cls(options).negative_targets([], {}, {})
        except MiroError:
            return  # refusing a run without rewards, with a clear message, is allowed
        require(dict(result) == {}, f"a run without rewards got negative targets {result!r}")

    def weights() -> None:
        strategy = cls(options)
        for steps in (1, 7, 50):
            for step in range(steps):
                value = strategy.scale_at(step, steps)
                require(isinstance(value, (int, float)) and math.isfinite(value),
                         f"scale_at({step}, {steps}) = {value!r} is not a finite number")
        if "scale" in cls.Options.model_fields:
            off = cls({**options, "scale": 0.0})
            weights_off = [off.scale_at(step, 10) for step in range(10)]
            require(all(w == 0 for w in weights_off), f"scale=0 must turn guidance off, got weights {weights_off}")

    def combine() -> None:
        strategy = cls(options)
        rng = np.random.default_rng(0)
        positive, negative = rng.normal(size=(2, 3, 4, 4)), rng.normal(size=(2, 3, 4, 4))
        copies = positive.copy(), negative.copy()
        mixed = np.asarray(strategy.combine(positive, negative, 2.5))
        require(mixed.shape == positive.shape and np.all(np.isfinite(mixed)), "combine() changed shape or overflowed")
        require(np.array_equal(positive, copies[0]) and np.array_equal(negative, copies[1]),
                 "combine() modified its inputs")
        require(np.allclose(np.asarray(strategy.combine(positive, negative, 0.0)), positive),
                 "combine() at weight 0 must return the positive branch")

    run("options have a scale", has_scale)
    run("negative targets cover exactly the run's rewards, in [0, 1]", targets)
    run("a run without rewards", no_rewards)
    run("finite weights; scale 0 turns guidance off", weights)
    run("combine keeps shapes and is the positive branch at weight 0", combine)
    return run.finish(raise_on_failure)



# -- samplers --------------------------------------------------------------------------------------------------------
def check_sampler(
    cls: type[Any],
    options: Mapping[str, Any] | None = None,
    *,
    light_import: bool = True,
    raise_on_failure: bool = True,
) -> Report:
    """Check a :class:`~miro_core.sampler.Sampler` subclass on velocity fields with known solutions."""
    import torch

    from miro_core.sampler import Sampler

    options = dict(options or {})
    run = CheckRun(cls)
    if not check_common(run, cls, Sampler, options, light_import):
        return run.finish(raise_on_failure)
    sampler = cls(options)
    noise = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))

    def constant() -> None:
        drift = torch.full_like(noise, 0.7)
        for steps in (1, 4):
            calls: list[tuple[float, int]] = []

            def velocity(x: Any, t: float, step: int, _calls: list[tuple[float, int]] = calls) -> Any:
                _calls.append((float(t), int(step)))
                return drift

            original = noise.clone()
            x0 = sampler.sample(velocity, noise, steps)
            require(torch.equal(noise, original), "sample() modified the noise it was given")
            require(tuple(x0.shape) == tuple(noise.shape), f"x0 has shape {tuple(x0.shape)}")
            require(torch.allclose(x0, noise - drift, atol=1e-5), "a constant velocity v must give x0 = x1 - v")
            require(calls and calls[0][0] == 1.0, "the first evaluation must be at t = 1 (pure noise)")
            require(all(0.0 <= t <= 1.0 and 0 <= s < steps for t, s in calls), "times or step indices out of range")
            require(len(calls) <= cls.evaluations_per_step * steps,
                     f"{len(calls)} evaluations for {steps} steps; evaluations_per_step is {cls.evaluations_per_step}")

    def accurate() -> None:
        x0 = sampler.sample(lambda x, t, step: x, noise, 50)
        expected = noise * math.exp(-1.0)
        error = float((x0 - expected).abs().max() / expected.abs().max())
        require(error < 0.05, f"on dx/dt = x with 50 steps the relative error is {error:.3f} (> 0.05)")

    def deterministic() -> None:
        a = sampler.sample(lambda x, t, step: x * t, noise, 5)
        b = sampler.sample(lambda x, t, step: x * t, noise, 5)
        require(torch.equal(a, b), "the same call gave different samples")

    def state_handed_on() -> None:
        if not hasattr(sampler, "integrate"):
            raise SkipCheck("this miro has no stateful sampler contract")
        returned: list[int] = []
        received: list[Any] = []

        def velocity(x: Any, t: float, step: int, state: Any) -> Any:
            received.append(state)
            returned.append(len(returned))
            return x * 0.1, returned[-1]

        sampler.integrate(velocity, noise, 4)
        require(received and received[0] is None, "the first evaluation must get state None")
        require(all(r in returned[:i] for i, r in enumerate(received) if i), "a state was not one returned before")
        require(received[-1] is not None, "the state returned by an evaluation never reached the next one")

    run("exact on a constant velocity", constant)
    run("accurate on dx/dt = x", accurate)
    run("deterministic", deterministic)
    run("state is handed to the next evaluation", state_handed_on)
    return run.finish(raise_on_failure)
