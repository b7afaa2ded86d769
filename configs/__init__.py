"""The YAML recipes (demo, paper scale, annotation), shipped in the wheel as ``miro_core.configs``.

In a clone they are ``configs/NAME.yaml``; installed from a wheel they live inside the package, so code
finds them with :func:`path` rather than relative to the repository.
"""

from __future__ import annotations

from pathlib import Path


def path(name: str) -> Path:
    """The packaged recipe ``name`` (for example ``"demo.yaml"``); raises if it is not shipped."""
    found = Path(__file__).resolve().parent / name
    if not found.is_file():
        raise FileNotFoundError(f"no packaged config {name!r} in {found.parent}")
    return found
