"""Built-in guidance strategies (MIRO-NOTES section 6)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from miro_core.errors import ConfigError
from miro_core.guidance import GuidanceOptions, GuidanceStrategy
from miro_core.hookspecs import Register, hookimpl


class NoGuidance(GuidanceStrategy):
    """The conditional velocity alone (w = 0): one forward pass per step."""

    name = "none"
    description = "no guidance: positive branch only"

    def scale_at(self, step: int, num_steps: int) -> float:
        return 0.0


class TextCFG(GuidanceStrategy):
    """Plain classifier-free guidance on text; the reward targets are the same in both branches."""

    name = "cfg"
    description = "text CFG: (1+w) v(c, s+) - w v(c-, s+)"


class MultiRewardCFG(GuidanceStrategy):
    """MIRO's multi-reward CFG: push towards ``s+`` (default 1) and away from ``s-`` (default 0)."""

    name = "miro"
    description = "multi-reward CFG: (1+w) v(c, s+) - w v(c-, s-)"

    def negative_targets(
        self, reward_keys: Sequence[str], positive: Mapping[str, float], negative: Mapping[str, float]
    ) -> dict[str, float]:
        return {key: float(negative.get(key, 0.0)) for key in reward_keys}


class IsolateOptions(GuidanceOptions):
    #: The reward to isolate: its negative target is 0, every other reward's is 1.
    target: str


class IsolateReward(GuidanceStrategy):
    """Single-reward isolation: s- = maximum for every reward except the target, which is 0."""

    name = "isolate"
    description = "guide along one reward only (s- = 1 except target = 0)"
    Options = IsolateOptions

    def negative_targets(
        self, reward_keys: Sequence[str], positive: Mapping[str, float], negative: Mapping[str, float]
    ) -> dict[str, float]:
        if self.options.target not in reward_keys:
            raise ConfigError(
                f"isolate: target {self.options.target!r} is not a reward of this run ({', '.join(reward_keys)})"
            )
        return {key: 0.0 if key == self.options.target else 1.0 for key in reward_keys}


class TradeoffOptions(GuidanceOptions):
    #: First reward of the pair; its negative target is ``t``.
    reward_a: str
    #: Second reward of the pair; its negative target is ``1 - t``.
    reward_b: str
    #: Position on the trade-off in [0, 1].
    t: float = 0.5


class PairwiseTradeoff(GuidanceStrategy):
    """Pairwise trade-off: s-_A = t, s-_B = 1 - t, every other reward at its maximum."""

    name = "tradeoff"
    description = "trade reward A against B (s-_A = t, s-_B = 1 - t, others 1)"
    Options = TradeoffOptions

    def negative_targets(
        self, reward_keys: Sequence[str], positive: Mapping[str, float], negative: Mapping[str, float]
    ) -> dict[str, float]:
        a, b, t = self.options.reward_a, self.options.reward_b, float(self.options.t)
        for key in (a, b):
            if key not in reward_keys:
                raise ConfigError(f"tradeoff: {key!r} is not a reward of this run ({', '.join(reward_keys)})")
        if not 0.0 <= t <= 1.0:
            raise ConfigError(f"tradeoff: t={t} is outside [0, 1]")
        targets = {key: 1.0 for key in reward_keys}
        targets[a] = t
        targets[b] = 1.0 - t
        return targets


@hookimpl
def register_guidance_strategies(register: Register) -> None:
    for strategy in (NoGuidance, TextCFG, MultiRewardCFG, IsolateReward, PairwiseTradeoff):
        register(strategy)
