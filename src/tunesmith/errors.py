"""Typed errors. Library code raises these with a message that says what to do next;
only the CLI turns them into a one-line message and an exit code."""


class TunesmithError(Exception):
    """Base class: anything the user can fix. The message is shown as-is, on one line."""

    exit_code = 1


class UsageError(TunesmithError):
    """A flag or argument value that cannot work (bad range, conflicting options)."""

    exit_code = 2


class ModelNotFoundError(TunesmithError):
    """A model name, folder or run that cannot be resolved to a GPT-2 checkpoint."""


class CheckpointError(TunesmithError):
    """A checkpoint that exists but cannot be loaded (wrong architecture, missing weights)."""


class DataError(TunesmithError):
    """Input data that cannot be read or leaves nothing to train on."""


class RunError(TunesmithError):
    """A run reference that does not resolve, or a run store operation that is refused."""


class ContextLengthError(UsageError):
    """Prompt plus requested tokens do not fit in the model's context."""
