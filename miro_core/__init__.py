"""MIRO: reward-conditioned text-to-image pretraining, as a plugin framework.

The core defines the contracts (reward models, binners, backbones, text encoders, autoencoders,
guidance strategies), the plugin manager that discovers implementations, and the data flow
(annotate -> bins -> train -> sample -> eval). It never imports a plugin, and it imports heavy
libraries (torch, transformers) only inside the functions that need them, so the CLI starts at once.
"""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _distribution_version

try:
    #: The distribution's version. Its one source is ``version`` in pyproject.toml; this reads the installed
    #: metadata, so ``miro --version``, run folders and ``miro plugins`` agree with what pip installed.
    __version__ = _distribution_version("miro")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

#: Version of the plugin API. Plugins declare the range they support in ``MIRO_API``
#: (a PEP 440 specifier such as ``">=1,<2"``); a mismatch is reported by ``miro plugins``.
API_VERSION = "1.0"
