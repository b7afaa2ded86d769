"""What every contract check shares: the report, the check runner, and the checks every component passes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from miro_core.errors import ConfigError, MissingWeightsError

HEAVY_MODULES = ("torch", "torchvision", "transformers", "diffusers", "open_clip", "timm", "tensorflow", "jax")
#: Reward keys a guidance strategy is checked with.
REWARD_KEYS = ("reward-a", "reward-b", "reward-c")
UNKNOWN_OPTION = "miro_conformance_unknown_option"


class ConformanceError(AssertionError):
    """One or more contract checks failed; the message lists each with what was wrong."""


class SkipCheck(Exception):
    """A check that cannot run here (no weights, a module that cannot be imported alone)."""


@dataclass
class Report:
    """What :func:`check_reward` and friends found."""

    component: str
    passed: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    def raise_for_failures(self) -> Report:
        if self.failed:
            lines = "\n".join(f"  - {name}: {why}" for name, why in self.failed.items())
            raise ConformanceError(f"{self.component} fails {len(self.failed)} contract check(s):\n{lines}")
        return self

    def __str__(self) -> str:
        text = f"{self.component}: {len(self.passed)} passed, {len(self.skipped)} skipped, {len(self.failed)} failed"
        text += "".join(f"\n  skipped {k}: {v}" for k, v in self.skipped.items())
        return text + "".join(f"\n  FAILED {k}: {v}" for k, v in self.failed.items())


class CheckRun:
    """Runs named checks, recording each outcome instead of stopping at the first failure."""

    def __init__(self, cls: type[Any]) -> None:
        self.cls = cls
        self.report = Report(f"{cls.kind()} {getattr(cls, 'name', '?')!r} ({cls.__module__}.{cls.__qualname__})")

    def __call__(self, name: str, check: Callable[[], Any]) -> bool:
        try:
            check()
        except SkipCheck as skip:
            self.report.skipped[name] = str(skip)
            return False
        except Exception as err:  # noqa: BLE001 - every failure is reported by name
            why = str(err) if isinstance(err, AssertionError) and str(err) else f"{type(err).__name__}: {err}"
            self.report.failed[name] = why
            return False
        self.report.passed.append(name)
        return True

    def skip(self, names: Sequence[str], why: str) -> None:
        for name in names:
            self.report.skipped[name] = why

    def load(self, load: Callable[[], Any], needs_weights: Sequence[str], require_weights: bool) -> bool:
        """Load a component's weights; without them, skip the checks that need them (or fail, if required)."""
        try:
            load()
        except MissingWeightsError as err:
            if require_weights:
                self.report.failed["load"] = f"weights are missing: {err}"
            else:
                self.skip(needs_weights, f"needs weights not on this machine ({str(err).splitlines()[0][:200]})")
            return False
        except Exception as err:  # noqa: BLE001 - a load failure is reported by name
            self.report.failed["load"] = f"{type(err).__name__}: {err}"
            return False
        return True

    def finish(self, raise_on_failure: bool) -> Report:
        return self.report.raise_for_failures() if raise_on_failure else self.report


def require(condition: Any, message: str) -> None:
    if not condition:
        raise AssertionError(message)


# -- checks every component shares --------------------------------------------------------------------------
def _check_identity(cls: type[Any], base: type[Any]) -> None:
    require(isinstance(cls, type) and issubclass(cls, base), f"{cls!r} is not a subclass of {base.__name__}")
    name = getattr(cls, "name", "")
    require(isinstance(name, str) and name, "`name` is empty: set the name users type on the command line")
    require(
        not any(c.isspace() or c in ",:" for c in name),
        f"name {name!r} contains a space, ',' or ':' (they separate names on the command line)",
    )
    require(isinstance(cls.version, str) and cls.version, "`version` must be a non-empty string")


def _check_unknown_option(cls: type[Any], options: Mapping[str, Any]) -> None:
    try:
        cls({**options, UNKNOWN_OPTION: 1})
    except ConfigError as err:
        require(UNKNOWN_OPTION in str(err), f"the error for an unknown option does not name the key: {err}")
        return
    raise AssertionError(f"an unknown option key ({UNKNOWN_OPTION}) was accepted; Options needs extra='forbid'")


def _float_fields(cls: type[Any]) -> list[str]:
    return [name for name, info in cls.Options.model_fields.items() if info.annotation in (float, float | None)]


def _check_non_finite_options(cls: type[Any], options: Mapping[str, Any]) -> None:
    floats = _float_fields(cls)
    if not floats:
        raise SkipCheck("the options have no float field")
    for name in floats:
        for bad in (float("nan"), float("inf")):
            try:
                cls({**options, name: bad})
            except ConfigError:
                continue
            raise AssertionError(f"option {name}={bad} was accepted; options must reject NaN and infinity")


def _check_options_round_trip(cls: type[Any], options: Mapping[str, Any]) -> None:
    component = cls(dict(options))
    dumped = component.options.model_dump(mode="json")
    again = cls(json.loads(json.dumps(dumped)))
    require(
        again.options.model_dump(mode="json") == dumped,
        "options do not survive a JSON round trip (they are recorded in config.json and read back)",
    )


def _check_light_import(cls: type[Any]) -> None:
    module = cls.__module__
    loaded = sys.modules.get(module)
    if module == "__main__" or loaded is None or not getattr(loaded, "__file__", None):
        raise SkipCheck(f"module {module} cannot be imported on its own")
    code = (
        "import importlib, json, sys\n"
        f"importlib.import_module({module!r})\n"
        f"print(json.dumps(sorted(m for m in {list(HEAVY_MODULES)!r} if m in sys.modules)))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    if result.returncode != 0:
        raise SkipCheck(f"importing {module} alone failed: {result.stderr.strip().splitlines()[-1:]}")
    heavy = json.loads(result.stdout.strip().splitlines()[-1])
    require(
        not heavy,
        f"importing {module} imports {', '.join(heavy)}; import heavy libraries inside load/score/build so that "
        "`miro plugins` and `miro --help` stay instant",
    )


def check_common(
    run: CheckRun, cls: type[Any], base: type[Any], options: Mapping[str, Any], light_import: bool
) -> bool:
    """The checks every component passes; False when the class is not even a component of ``base``."""
    ok = run("subclass, name and version", lambda: _check_identity(cls, base))
    run("unknown options are rejected", lambda: _check_unknown_option(cls, options))
    run("non-finite options are rejected", lambda: _check_non_finite_options(cls, options))
    ok &= run("options survive a JSON round trip", lambda: _check_options_round_trip(cls, options))
    if light_import:
        run("no heavy import at registration", lambda: _check_light_import(cls))
    return ok
