"""``miro plugins new KIND NAME``: write a working plugin package from the templates in ``miro_core/templates``.

The package is complete and real (a colourfulness reward, a percentile binner, a mirrored-targets guidance
strategy, a small convolutional backbone), with a pyproject declaring the entry point and a test that runs
the conformance kit, so an author starts from something that passes and changes it step by step.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from miro_core import __version__
from miro_core.errors import ConfigError


@dataclass(frozen=True)
class Kind:
    """What differs between the kinds of plugin a template exists for."""

    hook: str
    check: str
    table: str
    options: str
    usage: str
    extra_files: tuple[str, ...] = ()


KINDS: dict[str, Kind] = {
    "reward": Kind(
        "register_rewards", "check_reward", "rewards", "{}",
        "Score a dataset with it: `miro annotate DATA --rewards __NAME__ --out ANNOTATIONS`.",
    ),
    "binner": Kind(
        "register_binners", "check_binner", "binners", '{"num_bins": 8}',
        "Fit bins with it: `miro bins fit ANNOTATIONS --strategy __NAME__ --binner-option low=5 --out bins.json`.",
    ),
    "guidance": Kind(
        "register_guidance_strategies", "check_guidance", "guidance", "{}",
        "Sample with it: `miro sample RUN --strategy __NAME__ --prompt 'a red circle' --out samples`.",
    ),
    "backbone": Kind(
        "register_backbones", "check_backbone", "backbones", '{"size": "tiny"}',
        "Train with it: `miro train --config configs/demo.yaml --backbone __NAME__-tiny --out runs/mine`.",
        ("network.py",),
    ),
}

_NAME = re.compile(r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$")


def package_names(kind: str, name: str) -> tuple[str, str, str]:
    """(distribution, import package, class name) for a plugin: miro-reward-foo-bar, miro_reward_foo_bar, FooBar."""
    dist = f"miro-{kind}-{name.replace('_', '-')}"
    package = dist.replace("-", "_")
    cls = "".join(part.capitalize() for part in re.split(r"[-_]", name))
    return dist, package, cls


def core_range(version: str) -> str:
    """The core versions a new plugin accepts: this release up to the next minor one (``>=0.1.0,<0.2``)."""
    from packaging.version import InvalidVersion, Version

    try:
        release = Version(version).release
    except InvalidVersion:
        return ">=0.1"
    major, minor = (release + (0, 0))[:2]
    return f">={version},<{major}.{minor + 1}"


def _template(*parts: str) -> str:
    return resources.files("miro_core").joinpath("templates", *parts).read_text(encoding="utf-8")


def new_plugin(kind: str, name: str, out: str | Path = ".", *, force: bool = False) -> Path:
    """Write the plugin package ``OUT/miro-KIND-NAME`` and return its folder."""
    if kind not in KINDS:
        raise ConfigError(f"KIND {kind!r}: choose one of {', '.join(KINDS)}")
    if not _NAME.match(name):
        raise ConfigError(
            f"NAME {name!r}: use lower-case letters, digits and single '-' or '_' between them (e.g. colorfulness)"
        )
    spec = KINDS[kind]
    dist, package, cls = package_names(kind, name)
    folder = Path(out) / dist
    if folder.exists() and any(folder.iterdir()) and not force:
        raise ConfigError(f"{folder} already exists and is not empty; choose another --out or pass --force")
    values = {
        "__DIST__": dist,
        "__PACKAGE__": package,
        "__CLASS__": cls,
        "__NAME__": name,
        "__KIND_ID__": kind,
        "__KIND__": "guidance strategy" if kind == "guidance" else kind,
        "__HOOK__": spec.hook,
        "__CHECK__": spec.check,
        "__TABLE__": spec.table,
        "__OPTIONS__": spec.options,
        "__MODULE__": kind,
        "__MIRO_RANGE__": core_range(__version__),
        "__USAGE__": spec.usage,
    }
    files = {
        "pyproject.toml": _template("common", "pyproject.toml.tmpl"),
        "README.md": _template("common", "README.md.tmpl"),
        f"{package}/__init__.py": _template("common", "__init__.py.tmpl"),
        f"{package}/plugin.py": _template("common", "plugin.py.tmpl"),
        f"{package}/{kind}.py": _template(kind, "component.py.tmpl"),
        "tests/test_conformance.py": _template("common", "test_conformance.py.tmpl"),
    }
    for extra in spec.extra_files:
        files[f"{package}/{extra}"] = _template(kind, f"{Path(extra).stem}.py.tmpl")
    for relative, text in files.items():
        for placeholder in sorted(values, key=len, reverse=True):  # __KIND_ID__ before __KIND__
            text = text.replace(placeholder, values[placeholder])
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return folder
