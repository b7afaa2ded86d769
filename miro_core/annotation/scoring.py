"""One reward scores one batch, with the contract enforced at the boundary (:mod:`miro_core.reward_contract`).

A batch is scored in one call. If that call raises, the batch is scored again one sample at a time so
one bad sample costs only its own row (its error row holds the exception). A result of the wrong shape
is never retried: it is a bug in the plugin and stops the run with the contract message.

Each call gets fresh read-only views of the images; a reward that tried to modify them is named in
:attr:`RewardScorer.modified_inputs` (the views protected the other rewards).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from miro_core.data.decode import describe_error
from miro_core.errors import RewardContractError
from miro_core.reward_contract import as_score, check_result, describe_reward, read_only_views, was_modified
from miro_core.rewards import RewardModel

#: (index in the batch, reason) of the samples a reward could not score.
RowErrors = list[tuple[int, str]]


def _defined_by(cls: type, attribute: str) -> type | None:
    return next((klass for klass in cls.__mro__ if attribute in vars(klass)), None)


def uses_prepare(cls: type[RewardModel]) -> bool:
    """Whether annotation scores ``cls`` through ``prepare`` / ``score_prepared``.

    Yes when the reward implements both (:meth:`RewardModel.prepares_in_workers`), unless a subclass
    overrides ``score`` again below them: then that ``score`` is the newest behaviour and is what runs.
    """
    if not cls.prepares_in_workers():
        return False
    score_owner, prepared_owner = _defined_by(cls, "score"), _defined_by(cls, "score_prepared")
    if score_owner is None or prepared_owner is None:
        return True
    return not (score_owner is not prepared_owner and issubclass(score_owner, prepared_owner))


def exited(label: str, method: str, err: SystemExit) -> RewardContractError:
    """A reward that calls ``sys.exit()`` would end the run silently (exit status 0, nothing saved after it)."""
    return RewardContractError(
        f"{label} broke the reward contract: {method}() called sys.exit({err.code!r}); a reward raises an exception "
        "for a sample it cannot score and never exits the process. The run stopped; rows already saved are kept, "
        "and a rerun after the plugin is fixed continues"
    )


class RewardScorer:
    """Scores batches with one reward and keeps its time and contract findings."""

    def __init__(self, reward: RewardModel, provenance: dict[str, Any] | None = None, in_workers: bool = False):
        self.reward = reward
        self.name = reward.name
        self.label = describe_reward(reward, provenance)
        #: Whether this reward's ``prepare`` runs in the data workers (then ``score_prepared`` scores here).
        self.in_workers = in_workers
        self.seconds = 0.0
        self.modified_inputs = False

    def score_images(self, images: Sequence[Any], captions: Sequence[str]) -> tuple[list[float], RowErrors]:
        """``score()`` on decoded images."""

        def call(indices: Sequence[int]) -> Any:
            views = read_only_views([images[i] for i in indices])
            try:
                return self.reward.score(views, [captions[i] for i in indices])
            finally:
                if was_modified(views):
                    self.modified_inputs = True

        return self._timed(call, len(images), "score")

    def score_prepared(self, prepared: Sequence[Any]) -> tuple[list[float], RowErrors]:
        """``score_prepared()`` on the outputs of ``prepare`` (None where prepare failed: those stay NaN)."""
        ready = [i for i, item in enumerate(prepared) if item is not None]
        values = [math.nan] * len(prepared)
        if not ready:
            return values, []

        def call(indices: Sequence[int]) -> Any:
            return self.reward.score_prepared([prepared[ready[i]] for i in indices])

        scores, errors = self._timed(call, len(ready), "score_prepared")
        for position, value in zip(ready, scores, strict=True):
            values[position] = value
        return values, [(ready[i], reason) for i, reason in errors]

    # -- the contract -----------------------------------------------------------------------------
    def _timed(self, call: Callable[[Sequence[int]], Any], count: int, method: str) -> tuple[list[float], RowErrors]:
        t0 = time.perf_counter()
        try:
            return self._score(call, count, method)
        finally:
            self.seconds += time.perf_counter() - t0

    def _score(self, call: Callable[[Sequence[int]], Any], count: int, method: str) -> tuple[list[float], RowErrors]:
        try:
            result = call(range(count))
        except SystemExit as err:
            raise exited(self.label, method, err) from None
        except Exception:  # noqa: BLE001 - find the failing samples one by one below
            return self._one_by_one(call, count, method)
        return self._values(check_result(result, count, self.label, method), offset=0)

    def _one_by_one(
        self, call: Callable[[Sequence[int]], Any], count: int, method: str
    ) -> tuple[list[float], RowErrors]:
        values: list[float] = []
        errors: RowErrors = []
        for i in range(count):
            try:
                result = call([i])
            except SystemExit as err:
                raise exited(self.label, method, err) from None
            except Exception as err:  # noqa: BLE001 - a row-level error; the run goes on
                values.append(math.nan)
                errors.append((i, describe_error(err)))
                continue
            one, problems = self._values(check_result(result, 1, self.label, method), offset=i)
            values += one
            errors += problems
        return values, errors

    @staticmethod
    def _values(raw: list[Any], offset: int) -> tuple[list[float], RowErrors]:
        values: list[float] = []
        errors: RowErrors = []
        for i, item in enumerate(raw):
            value, reason = as_score(item)
            values.append(value)
            if reason is not None:
                errors.append((offset + i, reason))
        return values, errors
