"""The project's distributions as users install them: static checks, wheels, a clean install, a smoke run.

    python scripts/distributions.py check             # static checks of every pyproject.toml (a second)
    python scripts/distributions.py wheels [--keep]   # build every wheel, install into a fresh venv, run miro
    python scripts/distributions.py constraints       # rewrite constraints.txt from this environment

The distributions are the core (``pyproject.toml``) and every ``plugins/*/pyproject.toml``, discovered anew at
each run. ``wheels`` builds them from a copy of the source tree as a fresh clone would see it (git's tracked and
untracked-but-not-ignored files), so stale ``build/`` folders cannot hide a missing file. It installs them, not
editable, into a new virtual environment whose heavy third-party packages (torch & co) are the ones already
installed here, reached through a folder of symlinks named in a ``.pth`` file: pip sees them as installed and
resolves the wheels' dependency ranges against them with ``--no-index``, so nothing is downloaded and no second
multi-gigabyte torch is installed. The project's own distributions and their editable-install artefacts are
left out of that folder, so every ``miro`` module that runs there comes from a wheel.

Every failure says which distribution, which file or which requirement, and what to do.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import email.message
import email.parser
import fnmatch
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from packaging.licenses import InvalidLicenseExpression, canonicalize_license_expression
from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, as a package (pytest needs it)
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
CONSTRAINTS = ROOT / "constraints.txt"
CORE = "miro"
# The first setuptools that reads an SPDX `license` string and `license-files` (PEP 639).
SETUPTOOLS_FLOOR = Version("77")
# Shapes-world smoke run: the three offline rewards (no weights needed).
SMOKE_REWARDS = "shapes-alignment,shapes-aesthetic,shapes-sharpness"
SMOKE_SAMPLES = 16


class CheckFailed(Exception):
    """One or more problems, each a full sentence naming the file and the fix."""

    def __init__(self, step: str, problems: list[str]) -> None:
        super().__init__(f"{step}: " + "; ".join(problems))
        self.step = step
        self.problems = problems


# --------------------------------------------------------------------------------------------------------------
# The distributions


@dataclass
class Distribution:
    """One pyproject.toml of this repository."""

    root: Path
    config: dict

    @property
    def name(self) -> str:
        return canonicalize_name(self.config["project"]["name"])

    @property
    def version(self) -> str | None:
        return self.config["project"].get("version")

    @property
    def pyproject(self) -> Path:
        return self.root / "pyproject.toml"

    @property
    def label(self) -> str:
        return _rel(self.pyproject)

    def requirements(self, *, extras: bool = True) -> Iterator[tuple[str, Requirement | str]]:
        """(where, requirement) for `dependencies` and every optional-dependencies group."""
        project = self.config["project"]
        groups = [("dependencies", project.get("dependencies", []))]
        if extras:
            groups += [(f"optional-dependencies.{k}", v) for k, v in project.get("optional-dependencies", {}).items()]
        for where, items in groups:
            for item in items:
                try:
                    yield where, Requirement(item)
                except InvalidRequirement:
                    yield where, item

    def package_sources(self) -> list[tuple[str, Path]]:
        """(path inside the wheel, source folder) of every top-level package and every remapped subpackage."""
        setuptools_cfg = self.config.get("tool", {}).get("setuptools", {})
        package_dir: dict[str, str] = setuptools_cfg.get("package-dir", {})
        base = self.root / package_dir.get("", "")
        packages = setuptools_cfg.get("packages")
        if isinstance(packages, list):
            tops = sorted({p.split(".")[0] for p in packages})
        else:
            find = (packages or {}).get("find", {})
            include = find.get("include", ["*"])
            wheres = [self.root / w for w in find.get("where", ["."])]
            tops = sorted(
                d.name
                for where in wheres
                for d in where.iterdir()
                if (d / "__init__.py").is_file() and any(_glob_match(d.name, pattern) for pattern in include)
            )
        sources = [(top, self.root / package_dir[top] if top in package_dir else base / top) for top in tops]
        sources += [(key.replace(".", "/"), self.root / path) for key, path in package_dir.items() if "." in key]
        return sources

    def listed_packages(self) -> list[str] | None:
        packages = self.config.get("tool", {}).get("setuptools", {}).get("packages")
        return packages if isinstance(packages, list) else None

    def entry_point_groups(self) -> dict[str, dict[str, str]]:
        return self.config["project"].get("entry-points", {})


def _rel(path: Path) -> str:
    """A path as the user sees it: relative to the repository when inside it."""
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def _glob_match(name: str, pattern: str) -> bool:
    return fnmatch.fnmatchcase(name, pattern)


def discover(root: Path = ROOT) -> list[Distribution]:
    """The core first, then every plugin distribution (new ones are picked up without registration)."""
    paths = [root / "pyproject.toml", *sorted(root.glob("plugins/*/pyproject.toml"))]
    dists = []
    for path in paths:
        try:
            config = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as err:
            raise CheckFailed("discover", [f"{path.relative_to(root)} is not valid TOML: {err}"]) from None
        dists.append(Distribution(path.parent, config))
    return dists


def _source_files(folder: Path) -> Iterator[Path]:
    for path in sorted(folder.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix not in {".pyc", ".pyo"}:
            yield path


# --------------------------------------------------------------------------------------------------------------
# Static checks (no build): pins and ranges, the core dependency, one version source, SPDX licence, packages,
# imports declared.


def check_ranges(dists: list[Distribution]) -> list[str]:
    """No exact pins anywhere, and a lower bound on every requirement (the oldest release that works)."""
    problems = []
    for dist in dists:
        for where, req in dist.requirements():
            if isinstance(req, str):
                problems.append(f"{dist.label}: {where} has an invalid requirement {req!r}")
                continue
            operators = {spec.operator for spec in req.specifier}
            if operators & {"==", "==="}:
                problems.append(
                    f"{dist.label}: {where} pins {req} exactly; declare a range (a lower bound for the features "
                    "used, an upper bound only for known breakage) and record exact versions in constraints.txt"
                )
            elif not operators & {">=", ">", "~="}:
                problems.append(f"{dist.label}: {where} has no lower bound for {req.name!r}; add the oldest "
                                "version whose features the code uses (e.g. >=X.Y)")
    return problems


def check_internal_dependencies(dists: list[Distribution]) -> list[str]:
    """Every plugin depends on the core, and every dependency on a project distribution admits its version."""
    versions = {d.name: d.version for d in dists}
    problems = []
    for dist in dists:
        reqs = {canonicalize_name(r.name): r for _, r in dist.requirements(extras=False) if isinstance(r, Requirement)}
        if dist.name != CORE and CORE not in reqs:
            problems.append(f"{dist.label}: dependencies must include the core, e.g. \"miro>=0.1,<0.2\"")
        for name, req in reqs.items():
            version = versions.get(name)
            if version and not req.specifier.contains(version, prereleases=True):
                problems.append(
                    f"{dist.label}: requires {req}, which excludes {name} {version} in this repository; "
                    "widen the range (and test it) or bump the plugin"
                )
    return problems


def check_versions(dists: list[Distribution]) -> list[str]:
    """One version source per distribution: a static `version` in pyproject.toml, read back via metadata."""
    problems = []
    for dist in dists:
        project = dist.config["project"]
        if "version" in project.get("dynamic", []) or not dist.version:
            problems.append(
                f"{dist.label}: give a static `version = \"X.Y.Z\"` in [project] (the one version source; code "
                "reads it with importlib.metadata.version)"
            )
            continue
        try:
            Version(dist.version)
        except InvalidVersion:
            problems.append(f"{dist.label}: version {dist.version!r} is not a PEP 440 version")
        for _, folder in dist.package_sources():
            for path in _source_files(folder):
                if path.suffix == ".py" and _assigns_literal_version(path):
                    problems.append(
                        f"{_rel(path)}: assigns __version__ a literal; a second version source drifts. "
                        "Use importlib.metadata.version(<distribution>) instead"
                    )
    return problems


def _assigns_literal_version(path: Path) -> bool:
    """``__version__ = "1.2.3"``; a placeholder such as ``"0+unknown"`` (not installed) is no second source."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            if any(isinstance(t, ast.Name) and t.id == "__version__" for t in node.targets):
                try:
                    return Version(node.value.value).local is None
                except InvalidVersion:
                    return True
    return False


def check_license_and_build(dists: list[Distribution]) -> list[str]:
    """SPDX `license` string (PEP 639), no licence classifiers, a setuptools that understands both."""
    problems = []
    for dist in dists:
        project = dist.config["project"]
        license_value = project.get("license")
        if not isinstance(license_value, str):
            problems.append(
                f"{dist.label}: write the licence as an SPDX expression string, license = \"Apache-2.0\" "
                "(the {text = ...} table is deprecated and makes setuptools warn at every install)"
            )
        else:
            try:
                canonicalize_license_expression(license_value)
            except InvalidLicenseExpression as err:
                problems.append(f"{dist.label}: license {license_value!r} is not a valid SPDX expression: {err}")
        if any(c.startswith("License ::") for c in project.get("classifiers", [])):
            problems.append(f"{dist.label}: drop the `License ::` classifiers; the SPDX `license` replaces them")
        for pattern in project.get("license-files", []):
            if not list(dist.root.glob(pattern)):
                problems.append(f"{dist.label}: license-files pattern {pattern!r} matches no file")
        readme = project.get("readme")
        if isinstance(readme, str) and not (dist.root / readme).is_file():
            problems.append(f"{dist.label}: readme {readme!r} does not exist (the build would fail)")
        requires = dist.config.get("build-system", {}).get("requires", [])
        setuptools_reqs = [Requirement(r) for r in requires if canonicalize_name(Requirement(r).name) == "setuptools"]
        older = "76.99"  # a setuptools before the floor must be excluded
        if not setuptools_reqs or any(r.specifier.contains(older, prereleases=True) for r in setuptools_reqs):
            problems.append(f"{dist.label}: [build-system] requires must say setuptools>={SETUPTOOLS_FLOOR} "
                            "(the first release that reads the SPDX licence fields)")
    return problems


def check_packages_listed(dists: list[Distribution]) -> list[str]:
    """Where `packages` is an explicit list, every folder under a listed package is in it.

    Data-only folders (templates) count: setuptools treats every folder as a package and warns at every
    install ("Package would be ignored") about one that is not listed.
    """
    problems = []
    for dist in dists:
        listed = dist.listed_packages()
        if listed is None:
            continue
        for prefix, folder in dist.package_sources():
            if not folder.is_dir():
                continue
            for sub in sorted(p for p in folder.rglob("*") if p.is_dir() and "__pycache__" not in p.parts):
                package = ".".join([prefix.replace("/", "."), *sub.relative_to(folder).parts])
                if package not in listed and not any(package.startswith(f"{k}.") or package == k
                                                     for k in _remapped(dist)):
                    kind = "package" if (sub / "__init__.py").is_file() else "data folder"
                    problems.append(
                        f"{dist.label}: {kind} {package} ({_rel(sub)}/) is missing from [tool.setuptools] "
                        "packages; add it (setuptools installs only listed folders without warning)"
                    )
    return problems


def _remapped(dist: Distribution) -> list[str]:
    package_dir = dist.config.get("tool", {}).get("setuptools", {}).get("package-dir", {})
    return [key for key in package_dir if "." in key]


def check_imports_declared(dists: list[Distribution]) -> list[str]:
    """Every third-party module a distribution imports belongs to a distribution it declares.

    Imports guarded by ``try: ... except ImportError`` (optional accelerators) and ``if TYPE_CHECKING:`` are
    exempt. A module no installed distribution provides is reported too: it would fail for every user.
    """
    module_owners = importlib.metadata.packages_distributions()
    stdlib = set(sys.stdlib_module_names)
    problems = []
    for dist in dists:
        declared = {canonicalize_name(r.name) for _, r in dist.requirements() if isinstance(r, Requirement)}
        sources = dist.package_sources()
        own = {prefix.split("/")[0] for prefix, _ in sources}
        seen: dict[str, Path] = {}
        for _, folder in sources:
            for path in _source_files(folder):
                if path.suffix == ".py":
                    for module in _required_imports(path):
                        seen.setdefault(module, path)
        for module, path in sorted(seen.items()):
            if module in stdlib or module in own or module == "__future__":
                continue
            owners = {canonicalize_name(d) for d in module_owners.get(module, [])}
            if not owners:
                problems.append(f"{_rel(path)} imports {module!r}, which no installed distribution "
                                f"provides; declare the distribution in {dist.label} and install it")
            elif not owners & declared:
                problems.append(f"{_rel(path)} imports {module!r} (from {', '.join(sorted(owners))}) "
                                f"but {dist.label} does not declare it; add it with a range")
    return problems


def _required_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    exempt: set[int] = set()
    for node in ast.walk(tree):
        guarded = False
        if isinstance(node, ast.Try):
            caught = set()
            for handler in node.handlers:
                for t in (handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]):
                    if isinstance(t, ast.Name):
                        caught.add(t.id)
            guarded = bool(caught & {"ImportError", "ModuleNotFoundError", "Exception"})
            body = node.body
        elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            guarded, body = True, node.body
        if guarded:
            for child in body:
                exempt.update(id(n) for n in ast.walk(child))
    modules = set()
    for node in ast.walk(tree):
        if id(node) in exempt:
            continue
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module.split(".")[0])
    return modules


WEIGHTS_LICENCE = re.compile(r"Licen[cs]e of the weights|Weights: none", re.IGNORECASE)


def check_weights_licence(dists: list[Distribution]) -> list[str]:
    """Every plugin's README says the licence of the weights it loads (or that it loads none)."""
    problems = []
    for dist in dists:
        if dist.name == CORE or not dist.entry_point_groups().get("miro"):
            continue
        readme = dist.config["project"].get("readme")
        text = (dist.root / readme).read_text() if isinstance(readme, str) and (dist.root / readme).is_file() else ""
        if not WEIGHTS_LICENCE.search(text):
            problems.append(
                f"{_rel(dist.root / (readme or 'README.md'))}: say the licence of the weights the plugin loads "
                "(\"Licence of the weights: ...\", \"unknown, check the model card\" when it is) or \"Weights: none\""
            )
    return problems


STATIC_CHECKS = {
    "dependency ranges": check_ranges,
    "core dependency": check_internal_dependencies,
    "one version source": check_versions,
    "licence and build backend": check_license_and_build,
    "packages listed": check_packages_listed,
    "imports declared": check_imports_declared,
    "weights licence in README": check_weights_licence,
}


def run_static_checks(dists: list[Distribution]) -> dict[str, list[str]]:
    return {name: check(dists) for name, check in STATIC_CHECKS.items()}


# --------------------------------------------------------------------------------------------------------------
# Constraints: the exact versions the suite ran with


def _installed() -> dict[str, importlib.metadata.Distribution]:
    found: dict[str, importlib.metadata.Distribution] = {}
    for d in importlib.metadata.distributions():
        name = d.metadata["Name"]
        if name:
            found.setdefault(canonicalize_name(name), d)
    return found


def write_constraints(dists: list[Distribution], path: Path = CONSTRAINTS) -> int:
    """Every installed distribution except this project's own (and pip), as name==version."""
    own = {d.name for d in dists}
    lines = sorted(
        f"{d.metadata['Name']}=={d.version}"
        for name, d in _installed().items()
        if name not in own and name != "pip"
    )
    header = [
        "# The exact versions the test suite ran with (Python "
        f"{sys.version_info.major}.{sys.version_info.minor}, {sysconfig.get_platform()}).",
        "# Generated by `make constraints` (python scripts/distributions.py constraints) from the project venv,",
        "# leaving out this project's own distributions. `make install` installs with `-c constraints.txt`;",
        "# the distributions' own metadata only declares ranges. Regenerate after changing the environment and",
        "# running the suite; the wheel test fails when a required package drifts from this file.",
    ]
    tmp = path.with_suffix(".txt.tmp")
    tmp.write_text("\n".join(header + lines) + "\n")
    tmp.replace(path)
    return len(lines)


def read_constraints(path: Path = CONSTRAINTS) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = list(req.specifier)
            pins[canonicalize_name(req.name)] = spec.version
    return pins


def required_closure(dists: list[Distribution]) -> set[str]:
    """Names of every installed distribution the project needs (with the core's extras), transitively."""
    installed = _installed()
    base_env = default_environment()
    todo: list[tuple[str, set[str]]] = [(d.name, set(d.config["project"].get("optional-dependencies", {})))
                                        for d in dists]
    seen: set[str] = set()
    while todo:
        name, extras = todo.pop()
        if name in seen or name not in installed:
            continue
        seen.add(name)
        for text in installed[name].requires or []:
            req = Requirement(text)
            if req.marker and not any(req.marker.evaluate({**base_env, "extra": e}) for e in (extras or {""})):
                continue
            todo.append((canonicalize_name(req.name), set(req.extras)))
    return seen


def check_constraints(dists: list[Distribution], path: Path = CONSTRAINTS) -> list[str]:
    """The constraints file agrees with this environment for everything the project needs."""
    if not path.is_file():
        return [f"{path.name} is missing; run `make constraints`"]
    pins = read_constraints(path)
    installed = _installed()
    own = {d.name for d in dists}
    problems = []
    for name in sorted(required_closure(dists) - own):
        have = installed[name].version
        if name not in pins:
            problems.append(f"{path.name} lacks {name}=={have}, which the project needs; run `make constraints`")
        elif pins[name] != have:
            problems.append(f"{path.name} says {name}=={pins[name]} but this environment has {have}; "
                            "run the suite, then `make constraints`")
    return problems


# --------------------------------------------------------------------------------------------------------------
# Wheels: build from a clean copy, check file lists


def _git_visible_files(folder: Path) -> list[Path] | None:
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", "."],
            cwd=folder, capture_output=True, check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return [folder / p for p in out.decode().split("\0") if p]


def stage_sources(dists: list[Distribution], into: Path) -> dict[str, Path]:
    """Copy each distribution's files as a fresh clone has them (plus uncommitted, not-ignored work)."""
    staged = {}
    for dist in dists:
        nested = [o.root for o in dists if dist.root in o.root.parents]  # plugins/* inside the core's tree
        target = into / dist.name
        files = _git_visible_files(dist.root)
        if files is None:  # not a git checkout: everything but caches and build outputs
            files = [p for p in dist.root.rglob("*") if p.is_file() and not set(p.parts) & {
                "__pycache__", "build", "dist", ".venv", ".git"} and ".egg-info" not in str(p)]
        for path in files:
            if not path.is_file() or any(n in path.parents for n in nested):
                continue
            rel = path.relative_to(dist.root)
            if rel.parts[0] in {".venv", ".git"} or "__pycache__" in rel.parts or path.suffix in {".pyc", ".pyo"}:
                continue
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target / rel)
        staged[dist.name] = target
    return staged


def build_wheels(staged: dict[str, Path], out: Path, python: str) -> str:
    """One `pip wheel` for all: no isolation (the build backend is this environment's setuptools)."""
    cmd = [python, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--check-build-dependencies",
           "--no-index", "--no-cache-dir", "--disable-pip-version-check", "--wheel-dir", str(out),
           *map(str, staged.values())]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    log = proc.stdout + proc.stderr
    if proc.returncode:
        raise CheckFailed("build", [f"pip wheel failed (exit {proc.returncode}):\n{_tail(log)}"])
    deprecations = sorted({line.strip() for line in log.splitlines() if "DeprecationWarning" in line})
    if deprecations:
        raise CheckFailed("build", [f"the build printed deprecation warnings: {' | '.join(deprecations)}"])
    return log


def _wheel_of(out: Path, dist: Distribution) -> Path:
    stem = dist.config["project"]["name"].replace("-", "_").replace(".", "_")
    found = sorted(p for p in out.glob("*.whl") if canonicalize_name(p.name.split("-")[0]) == dist.name)
    if len(found) != 1:
        raise CheckFailed("build", [f"expected one wheel for {dist.name} ({stem}-*.whl) in {out}, found {found}"])
    return found[0]


@dataclass
class WheelInfo:
    path: Path
    names: set[str]
    metadata: email.message.Message
    entry_points: dict[str, dict[str, str]] = field(default_factory=dict)


def read_wheel(path: Path) -> WheelInfo:
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        info_dir = next(n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info"))
        metadata = email.parser.Parser().parsestr(zf.read(f"{info_dir}/METADATA").decode())
        groups: dict[str, dict[str, str]] = {}
        if f"{info_dir}/entry_points.txt" in names:
            group = None
            for line in zf.read(f"{info_dir}/entry_points.txt").decode().splitlines():
                line = line.strip()
                if line.startswith("[") and line.endswith("]"):
                    group = line[1:-1]
                    groups[group] = {}
                elif "=" in line and group:
                    key, value = (s.strip() for s in line.split("=", 1))
                    groups[group][key] = value
    return WheelInfo(path, names, metadata, groups)


def check_wheel(dist: Distribution, wheel: WheelInfo, staged_root: Path) -> list[str]:
    """Name, version, licence and dependencies as declared; every source file of every package inside."""
    problems = []
    meta = wheel.metadata
    if canonicalize_name(meta["Name"]) != dist.name or meta["Version"] != dist.version:
        problems.append(f"{wheel.path.name}: metadata says {meta['Name']} {meta['Version']}, "
                        f"{dist.label} says {dist.name} {dist.version}")
    if meta.get("License-Expression") != dist.config["project"].get("license"):
        problems.append(f"{wheel.path.name}: License-Expression is {meta.get('License-Expression')!r}")
    for text in meta.get_all("Requires-Dist") or []:
        req = Requirement(text)
        if {s.operator for s in req.specifier} & {"==", "==="}:
            problems.append(f"{wheel.path.name}: Requires-Dist pins {req} exactly")
    staged = Distribution(staged_root, dist.config)
    for prefix, folder in staged.package_sources():
        if not folder.is_dir():
            problems.append(f"{wheel.path.name}: package folder {folder.relative_to(staged_root)} does not exist")
            continue
        for path in _source_files(folder):
            arcname = f"{prefix}/{path.relative_to(folder).as_posix()}"
            if arcname not in wheel.names:
                source = _rel(dist.root / path.relative_to(staged_root))
                problems.append(f"{wheel.path.name} lacks {arcname} (source: {source}); a package file that is "
                                "not in the wheel breaks every non-editable install; check package-data in "
                                f"{dist.label}")
    declared = dist.entry_point_groups()
    if wheel.entry_points.get("miro", {}) != declared.get("miro", {}):
        problems.append(f"{wheel.path.name}: entry points {wheel.entry_points.get('miro')} differ from "
                        f"{dist.label}'s {declared.get('miro')}")
    return problems


# --------------------------------------------------------------------------------------------------------------
# A fresh environment that reuses this one's heavy packages


def _site_dirs() -> list[Path]:
    paths = sysconfig.get_paths()
    return list(dict.fromkeys(Path(paths[k]) for k in ("purelib", "platlib")))


def _is_editable(info: Path) -> bool:
    direct_url = info / "direct_url.json"
    try:
        return bool(json.loads(direct_url.read_text()).get("dir_info", {}).get("editable"))
    except (OSError, ValueError):
        return False


def shared_entries(site: Path, own: set[str]) -> Iterator[Path]:
    """Entries of `site` to share: everything but this project's distributions and any editable install."""
    skip: set[str] = set()
    for info in [*site.glob("*.dist-info"), *site.glob("*.egg-info")]:
        meta_file = info / ("METADATA" if info.suffix == ".dist-info" else "PKG-INFO")
        if not meta_file.is_file():
            continue
        name = email.parser.Parser().parsestr(meta_file.read_text(errors="replace"), headersonly=True)["Name"]
        if (name and canonicalize_name(name) in own) or _is_editable(info):
            skip.add(info.name)
            record = info / "RECORD"
            if record.is_file():
                for line in record.read_text().splitlines():
                    top = line.split(",", 1)[0].split("/", 1)[0]
                    if top and not top.startswith(".."):
                        skip.add(top)
    for entry in sorted(site.iterdir()):
        name = entry.name
        if (name in skip or name.startswith("__editable__") or name.endswith((".egg-link", ".pth"))
                or name == "__pycache__"):
            continue
        yield entry


def make_venv(work: Path, own: set[str]) -> tuple[Path, Path]:
    """A new venv (no pip of its own) plus a .pth naming a folder of symlinks to this environment's packages."""
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    links = work / "shared-site-packages"
    links.mkdir()
    for site in _site_dirs():
        for entry in shared_entries(site, own):
            if not (links / entry.name).exists():
                (links / entry.name).symlink_to(entry)
    purelib = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    # Appended after the venv's own site-packages: the wheels installed there win over anything shared.
    (purelib / "_miro_shared_packages.pth").write_text(f"{links}\n")
    return python, purelib


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _run(cmd: list[str], *, env: dict[str, str], cwd: Path, step: str, timeout: float = 600) -> str:
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode:
        raise CheckFailed(step, [f"`{' '.join(map(str, cmd))}` exited {proc.returncode}:\n"
                                 f"{_tail(proc.stdout + proc.stderr)}"])
    return proc.stdout


_PROBE = r"""
import importlib.metadata as md, importlib.resources, json, sys
from pathlib import Path
from packaging.specifiers import SpecifierSet
import miro_core
site = Path(sys.argv[1]).resolve()
report = {"core_file": miro_core.__file__, "core_version": miro_core.__version__, "api": miro_core.API_VERSION,
          "demo_config": importlib.resources.files("miro_core.configs").joinpath("demo.yaml").is_file(),
          "plugins": {}}
for ep in md.entry_points(group="miro"):
    entry = {"distribution": ep.dist.metadata["Name"], "version": ep.dist.version}
    try:
        module = ep.load()
        entry["file"] = module.__file__
        entry["inside"] = Path(module.__file__).resolve().is_relative_to(site)
        declared = getattr(module, "MIRO_API", None)
        entry["miro_api"] = declared
        entry["api_ok"] = declared is not None and miro_core.API_VERSION in SpecifierSet(str(declared))
    except Exception as err:
        entry["error"] = f"{type(err).__name__}: {err}"
    report["plugins"][ep.name] = entry
print(json.dumps(report))
"""


def smoke_test(python: Path, purelib: Path, work: Path, dists: list[Distribution],
               wheels: dict[str, WheelInfo]) -> list[str]:
    """miro --version, miro plugins --json, the API ranges, and a tiny shapes-world annotate."""
    bindir = python.parent
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "MIRO_", "PIP_")) and k not in {"VIRTUAL_ENV", "CONDA_PREFIX"}}
    env.update(PATH=f"{bindir}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=str(bindir.parent),
               HF_HUB_OFFLINE="1", PYTHONNOUSERSITE="1", OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"))
    run = work / "run"
    run.mkdir()
    miro = str(bindir / "miro")
    core = next(d for d in dists if d.name == CORE)
    problems = []

    out = _run([miro, "--version"], env=env, cwd=run, step="miro --version").strip()
    if core.version not in out.split() or "API" not in out:
        problems.append(f"`miro --version` printed {out!r}; expected the core version {core.version} and the "
                        "plugin API version")

    probe = json.loads(_run([str(python), "-c", _PROBE, str(purelib)], env=env, cwd=run, step="probe"))
    if not Path(probe["core_file"]).resolve().is_relative_to(purelib.resolve()):
        problems.append(f"miro_core was imported from {probe['core_file']}, not from the wheel in {purelib}")
    if probe["core_version"] != core.version:
        problems.append(f"miro_core.__version__ is {probe['core_version']}, pyproject.toml says {core.version}")
    if not probe["demo_config"]:
        problems.append("miro_core.configs/demo.yaml is not installed (the demo's default recipe)")

    expected = {name: (canonicalize_name(info.metadata["Name"]), info.metadata["Version"])
                for info in wheels.values() for name in info.entry_points.get("miro", {})}
    for name, (dist_name, _) in sorted(expected.items()):
        entry = probe["plugins"].get(name)
        if entry is None:
            problems.append(f"entry point {name!r} of {dist_name} is not visible after installing its wheel")
        elif "error" in entry:
            problems.append(f"plugin {name!r} ({dist_name}) fails to import from its wheel: {entry['error']}")
        elif not entry["inside"]:
            problems.append(f"plugin {name!r} was imported from {entry['file']}, not from its wheel")
        elif not entry["api_ok"]:
            problems.append(f"plugin {name!r} ({dist_name}) declares MIRO_API {entry['miro_api']!r}, which does "
                            f"not admit the core's plugin API {probe['api']}")

    listed = json.loads(_run([miro, "plugins", "--json"], env=env, cwd=run, step="miro plugins --json"))
    by_name = {e["name"]: e for e in listed}
    for entry in listed:
        if entry.get("error"):
            problems.append(f"`miro plugins` reports {entry['name']!r} ({entry['distribution']}) failed: "
                            f"{entry['error']}")
    for name, (dist_name, version) in sorted(expected.items()):
        entry = by_name.get(name)
        if entry is None:
            problems.append(f"`miro plugins --json` does not list {name!r} ({dist_name})")
        elif (canonicalize_name(entry["distribution"]), entry["version"]) != (dist_name, version):
            problems.append(f"`miro plugins --json` shows {name!r} as {entry['distribution']} {entry['version']}, "
                            f"its wheel is {dist_name} {version}")

    _run([miro, "data", "shapes", "--n", str(SMOKE_SAMPLES), "--out", "data", "--seed", "0"],
         env=env, cwd=run, step="miro data shapes")
    _run([miro, "annotate", "data", "--rewards", SMOKE_REWARDS, "--out", "annotations"],
         env=env, cwd=run, step="miro annotate")
    summary_file = run / "annotations" / "summary.json"
    if not summary_file.is_file():
        problems.append(f"`miro annotate` wrote no {summary_file.name}")
    else:
        summary = json.loads(summary_file.read_text())
        if summary.get("scored") != SMOKE_SAMPLES or summary.get("errors") != 0:
            problems.append(f"`miro annotate` scored {summary.get('scored')} of {SMOKE_SAMPLES} samples with "
                            f"{summary.get('errors')} errors: {summary}")
    return problems


# --------------------------------------------------------------------------------------------------------------
# Driver


@contextlib.contextmanager
def _timed(label: str, timings: dict[str, float]) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[label] = time.perf_counter() - start


def wheels_check(work: Path, *, python: str = sys.executable) -> dict[str, float]:
    """Everything in order; raises CheckFailed at the first failing step, with every problem of that step."""
    timings: dict[str, float] = {}
    dists = discover()
    with _timed("static checks", timings):
        failed = {k: v for k, v in run_static_checks(dists).items() if v}
        if failed:
            raise CheckFailed("static checks", [p for v in failed.values() for p in v])
        problems = check_constraints(dists)
        if problems:
            raise CheckFailed("constraints", problems)
    with _timed("build", timings):
        staged = stage_sources(dists, work / "src")
        build_wheels(staged, work / "wheels", python)
    wheels = {d.name: read_wheel(_wheel_of(work / "wheels", d)) for d in dists}
    problems = [p for d in dists for p in check_wheel(d, wheels[d.name], staged[d.name])]
    if problems:
        raise CheckFailed("wheel contents", problems)
    own = {d.name for d in dists}
    with _timed("install", timings):
        venv_python, purelib = make_venv(work, own)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON"))}
        _run([str(venv_python), "-m", "pip", "install", "--no-index", "--find-links", str(work / "wheels"),
              "--no-cache-dir", "--disable-pip-version-check", "--quiet",
              *[str(w.path) for w in wheels.values()]], env=env, cwd=work, step="pip install (wheels)")
        _run([str(venv_python), "-m", "pip", "check", "--disable-pip-version-check"], env=env, cwd=work,
             step="pip check")
        leaked = [p.name for p in purelib.iterdir() if p.name.startswith("__editable__") or p.suffix == ".egg-link"]
        if leaked:
            raise CheckFailed("install", [f"editable artefacts in the fresh environment: {leaked}"])
    with _timed("smoke run", timings):
        problems = smoke_test(venv_python, purelib, work, dists, wheels)
        if problems:
            raise CheckFailed("smoke run", problems)
    return timings


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="static checks of every pyproject.toml and constraints.txt")
    wheels = sub.add_parser("wheels", help="build, install into a fresh venv, run miro")
    wheels.add_argument("--work", type=Path, help="working folder (default: a temporary one, removed)")
    wheels.add_argument("--keep", action="store_true", help="keep the temporary working folder")
    sub.add_parser("constraints", help=f"rewrite {CONSTRAINTS.name} from this environment")
    args = parser.parse_args(list(argv) if argv is not None else None)

    try:
        if args.command == "constraints":
            count = write_constraints(discover())
            print(f"wrote {count} pins to {CONSTRAINTS.relative_to(ROOT)}")
            return 0
        if args.command == "check":
            dists = discover()
            results = run_static_checks(dists)
            results["constraints"] = check_constraints(dists)
            bad = {k: v for k, v in results.items() if v}
            for name, problems in results.items():
                print(f"{'FAIL' if problems else 'ok  '} {name}")
                for problem in problems:
                    print(f"     - {problem}")
            print(f"{len(dists)} distributions: {', '.join(d.name for d in dists)}")
            return 1 if bad else 0
        work = args.work or Path(tempfile.mkdtemp(prefix="miro-wheels-"))
        work.mkdir(parents=True, exist_ok=True)
        try:
            started = time.perf_counter()
            timings = wheels_check(work)
            steps = ", ".join(f"{k} {v:.1f}s" for k, v in timings.items())
            print(f"wheels ok: {len(discover())} distributions built, installed and run "
                  f"({steps}; total {time.perf_counter() - started:.1f}s)")
            return 0
        finally:
            if args.work is None and not args.keep:
                shutil.rmtree(work, ignore_errors=True)
            elif args.keep:
                print(f"kept {work}")
    except CheckFailed as failure:
        print(f"FAILED at {failure.step}:", file=sys.stderr)
        for problem in failure.problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
