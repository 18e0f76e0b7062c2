"""The plugin's exceptions: each message names the file or key, the cause and the fix.

The plugin's tools print a :class:`PluginError` as one ``error:`` line instead of a
traceback. This module imports nothing but the standard library, so every layer of the
package (``utils``, ``datasets``, ``engine``) can use it.
"""
import pickle

__all__ = [
    'PluginError', 'CheckpointRefusedError', 'CheckpointReadError', 'CheckpointMismatchError',
    'DataCheckError', 'UnknownTypeError', 'MissingCompiledOpError'
]


class PluginError(ValueError):
    """An error whose message names the file or key, the cause and the fix."""


class CheckpointRefusedError(PluginError, pickle.UnpicklingError):
    """A checkpoint holds Python objects that a weights-only load does not allow."""


class CheckpointReadError(PluginError):
    """A checkpoint file cannot be read (missing, empty, truncated, not a PyTorch file)."""


class CheckpointMismatchError(PluginError):
    """A checkpoint does not fit the module it is loaded into (pretrained backbone weights,
    an evaluated model, a converted file); the message names the keys and the opt-out."""


class DataCheckError(PluginError):
    """A dataset file or folder is unusable; the message names it and the fix."""


class UnknownTypeError(PluginError):
    """A config names a type that no registry of its scope knows; the message names the key
    and the closest registered names."""


class MissingCompiledOpError(RuntimeError):
    """Code called an mmcv compiled op that this install (mmcv-lite) does not have."""
