"""MIRO: reward-conditioned text-to-image pretraining, as a plugin framework.

The core defines the contracts (reward models, binners, backbones, text encoders, autoencoders,
guidance strategies), the plugin manager that discovers implementations, and the data flow
(annotate -> bins -> train -> sample -> eval). It never imports a plugin, and it imports heavy
libraries (torch, transformers) only inside the functions that need them, so the CLI starts at once.
"""

__version__ = "0.1.0"

#: Version of the plugin API. Plugins declare the range they support in ``MIRO_API``
#: (a PEP 440 specifier such as ``">=1,<2"``); a mismatch is reported by ``miro plugins``.
API_VERSION = "1.0"
