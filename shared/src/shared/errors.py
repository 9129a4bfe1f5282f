"""Error types raised before expensive work starts.

Each message names the offending file or field and says how to fix it.
"""

from __future__ import annotations


class SharedError(Exception):
    """Base class for the shared core's user-facing errors."""


class ConfigError(SharedError, ValueError):
    """A config field is invalid. The message names the field and the fix."""


class PromptFileError(SharedError, ValueError):
    """A prompt file is missing, empty or malformed. The message names the file (and line)."""


class CheckpointError(SharedError, ValueError):
    """A checkpoint is missing, incomplete or corrupt. The message names the path."""


class TooManyFaultsError(SharedError, RuntimeError):
    """Too many consecutive non-finite losses/gradients/rewards: the run stops (after a checkpoint)."""
