"""Which reward plugins measure a run's images (``miro eval`` and ``miro serve``): the run's own.

A run was trained on some rewards (``reward_keys`` in its config.json); its images are measured with the
same reward plugins, created with the options the annotation used (``reward_options`` in the annotation
folder's config.json, e.g. a local checkpoint), as long as they load offline. Rewards that cannot load
(weights not on this machine, plugin not installed) are named with the reason. When none of the run's
rewards loads, or the run has none (a baseline), the shapes-world rewards that are installed are used
instead, and that is said too: a measurement never silently comes from other rewards than the run's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from miro_core.errors import MiroError

#: What measures images when the run's own rewards cannot: the shapes world's, which need no weights.
FALLBACK_REWARDS: tuple[str, ...] = ("shapes-alignment", "shapes-aesthetic", "shapes-sharpness")


def _read(url: str, name: str) -> dict[str, Any]:
    try:
        from miro_core.data.atomic import join, read_json

        record = read_json(join(str(url), name))
    except Exception:  # noqa: BLE001 - the folder may be gone or remote; defaults then apply
        return {}
    return record if isinstance(record, dict) else {}


def annotation_config(run_config: Mapping[str, Any]) -> dict[str, Any]:
    """The config.json of the annotation folder the run was trained on ({} when it cannot be read).

    The run's data is the annotation folder itself, or records written by ``miro encode`` from it (whose
    ``records.json`` names the annotation folder as ``source``).
    """
    data = run_config.get("data") or {}
    candidates = [(run_config.get("train") or {}).get("data"), data.get("path") if isinstance(data, dict) else None]
    for url in [c for c in candidates if c]:
        record = _read(url, "config.json")
        if record.get("components") or record.get("reward_options"):
            return record
        source = _read(url, "records.json").get("source")
        if source:
            record = _read(source, "config.json")
            if record:
                return record
    return {}


def _recorded_rewards(run_config: Mapping[str, Any], annotation: Mapping[str, Any]) -> dict[str, Any]:
    """``components.rewards`` of the run's record, else of its annotation folder (name -> provenance)."""
    for record in (run_config, annotation):
        rewards = (record.get("components") or {}).get("rewards")
        if isinstance(rewards, dict) and rewards:
            return rewards
    return {}


def annotation_reward_options(run_config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The options each reward was annotated with, from the run's record or its annotation folder."""
    recorded = run_config.get("reward_options")
    if isinstance(recorded, dict):
        return {str(k): dict(v or {}) for k, v in recorded.items()}
    annotation = annotation_config(run_config)
    options = {
        str(k): dict(v.get("options") or {})
        for k, v in _recorded_rewards(run_config, annotation).items()
        if isinstance(v, dict) and isinstance(v.get("options"), dict)
    }
    for name, given in (annotation.get("reward_options") or {}).items():
        if isinstance(given, dict):
            options[str(name)] = {**options.get(str(name), {}), **given}
    return options


def annotation_sources(run_config: Mapping[str, Any]) -> dict[str, str]:
    """Reward name -> ``DISTRIBUTION:NAME`` of the code that annotated the run's data, where recorded."""
    sources = {}
    for name, record in _recorded_rewards(run_config, annotation_config(run_config)).items():
        if isinstance(record, dict) and record.get("distribution") not in (None, "?"):
            sources[str(name)] = f"{record['distribution']}:{record.get('name', name)}"
    return sources


def folder_run_config(folder: str | Path) -> dict[str, Any] | None:
    """For an image folder written by ``miro sample`` or ``miro eval``: the config of the run it came from."""
    import json

    from miro_core.run_folder import read_run_config

    for candidate in (Path(folder) / "config.json", Path(folder).parent / "config.json"):
        if not candidate.is_file():
            continue
        try:
            record = json.loads(candidate.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(record, dict):
            continue
        run = record.get("run") or (record.get("source") if record.get("source_kind") == "run" else None)
        if run:
            try:
                return read_run_config(Path(run))
            except (MiroError, OSError, ValueError):
                return None
    return None


def describe_failure(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text if isinstance(err, MiroError) else f"{type(err).__name__}: {text}"


def load_reward(
    registry: Any, name: str, options: Mapping[str, Any] | None, device: str, source: str | None = None
) -> tuple[Any, str | None]:
    """``(loaded reward, None)``, or ``(None, why it cannot load here)``.

    ``source`` (``DISTRIBUTION:NAME``) picks the distribution that annotated the data when it is installed, so
    a name two distributions provide still resolves to the run's own code.
    """
    if source is not None and source in registry.rewards:
        name = source
    if name not in registry.rewards:
        return None, "not installed (no plugin provides it; see `miro plugins`)"
    try:
        reward = registry.rewards.create(name, dict(options or {}))
        reward.load(device)
    except Exception as err:  # noqa: BLE001 - a reward that cannot load is reported, not fatal
        return None, describe_failure(err)
    return reward, None


@dataclass
class RewardChoice:
    """Which rewards to measure with, where the choice came from, and what could not be used."""

    names: list[str]
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Name -> ``DISTRIBUTION:NAME`` of the code that annotated the run's data (see :func:`annotation_sources`).
    sources: dict[str, str] = field(default_factory=dict)
    #: ``requested`` (given by the user), ``run`` (the run's own rewards) or ``fallback``.
    origin: str = "run"
    unavailable: dict[str, str] = field(default_factory=dict)
    note: str = ""
    #: Name -> provenance of the reward that actually measured (filled while scoring).
    provenance: dict[str, Any] = field(default_factory=dict)

    def describe(self, measured: Sequence[str]) -> str:
        if measured:
            what = {"requested": "the requested rewards", "run": "the run's own rewards",
                    "fallback": "the shapes-world rewards (fallback)"}[self.origin]
            text = f"measured with {what}: {', '.join(measured)}"
        else:
            text = "no reward could measure the images"
        if self.unavailable:
            text += "; not measured: " + "; ".join(f"{n} ({why})" for n, why in self.unavailable.items())
        return text + (f"; {self.note}" if self.note else "")

    def as_json(self, measured: Sequence[str]) -> dict[str, Any]:
        return {"origin": self.origin, "measured": list(measured), "unavailable": dict(self.unavailable),
                "note": self.note}


def run_rewards(run_config: Mapping[str, Any] | None) -> RewardChoice:
    """The run's reward keys with their annotation options (empty for a baseline or an unknown run)."""
    if not run_config:
        return RewardChoice([], origin="run", note="the images name no run, so the run's rewards are unknown")
    # A released checkpoint names its rewards by the authors' keys (``clip_score``, ...); ``reward_plugins`` maps
    # them to the plugins that compute those scores.
    plugins = run_config.get("reward_plugins") or {}
    keys = [str(plugins.get(k, k)) for k in run_config.get("reward_keys") or []]
    note = "" if keys else "the run was trained without rewards"
    return RewardChoice(keys, annotation_reward_options(run_config), annotation_sources(run_config), origin="run",
                        note=note)


def fallback(choice: RewardChoice, registry: Any) -> RewardChoice:
    """The shapes-world rewards that are installed, keeping what the run's choice could not load."""
    names = [n for n in FALLBACK_REWARDS if n in registry.rewards]
    why = "none of the run's rewards could be loaded" if choice.names else (choice.note or "no run rewards")
    return RewardChoice(names, {}, {}, "fallback", dict(choice.unavailable), note=f"fallback because {why}")
