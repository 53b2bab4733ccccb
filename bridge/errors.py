"""Exception hierarchy for hushbridge.

Every error the package raises on purpose derives from :class:`HushbridgeError`, and the ones
that mirror a builtin also derive from it, so ``except ValueError`` keeps working for callers
who do not know about hushbridge.
"""
from __future__ import annotations


class HushbridgeError(Exception):
    """Root of all hushbridge errors."""


class ParamError(HushbridgeError, ValueError):
    """A parameter value is out of range, not a number, or the parameter does not exist."""


class ChainError(HushbridgeError, ValueError):
    """A chain description names an unknown effect or instance id."""


class PresetError(HushbridgeError, ValueError):
    """A preset file is missing or malformed. The message names file, line and key."""


class AudioError(HushbridgeError):
    """Base for errors from audio files and audio backends."""


class AudioFileError(AudioError, OSError):
    """An audio file cannot be read or written."""


class BackendError(AudioError, RuntimeError):
    """An audio backend failed. ``operation`` says what was being done when it failed."""

    def __init__(self, message: str, operation: str = "") -> None:
        self.operation = operation
        super().__init__(f"Error {operation}: {message}" if operation else message)


class RecordingError(AudioError, RuntimeError):
    """A recording cannot start (a file cannot be created, one is running) or had to stop."""


class ControlError(HushbridgeError, OSError):
    """A control server (OSC) could not start, e.g. its port is taken."""
