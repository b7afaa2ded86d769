"""Exception types shared by the core and plugins.

Every error a user can cause derives from :class:`MiroError`, so the CLI can print it as a one-line
message (file, row or option, and what to do) instead of a traceback.
"""


class MiroError(Exception):
    """An error caused by input or configuration, reported to the user without a traceback."""


class PluginError(MiroError):
    """A plugin failed to load, declared an incompatible API, or registered something invalid."""


class DuplicateNameError(PluginError):
    """Two plugins registered the same component name in the same registry."""


class UnknownComponentError(MiroError):
    """A component name that no loaded plugin provides."""


class ConfigError(MiroError):
    """A configuration file or option that does not validate."""


class MissingWeightsError(MiroError):
    """Model weights are not where the plugin looked; the message lists the files and where to put them."""


class DataError(MiroError):
    """An input dataset, annotation table or bins file that cannot be read."""


class StorageError(MiroError):
    """A file system or URL the run must read or write is unusable: read-only, full, unreachable, or its
    fsspec backend is not installed. The message names the path or URL and what to do."""


class OutputLockedError(MiroError):
    """Another live process is writing the same output folder (the message names its pid and host)."""


class ShardReadError(DataError):
    """A data shard cannot be read (or stops being readable midway); recorded as a shard-level error."""


class RewardContractError(PluginError):
    """A reward broke the ``score()`` contract (not a sequence of floats of the batch's length)."""
