"""User-facing error types.

Each kind of user mistake has its own exception; the CLI prints ``str(error)`` as one line
and exits with code 2. Anything else is a bug and keeps its traceback.
"""


class NnlabError(Exception):
    """Base class for errors caused by the user's input, not by a bug in nnlab."""


class DataError(NnlabError):
    """A dataset or input file is missing, corrupt, or not in the expected format."""


class ConfigError(NnlabError):
    """A recipe name, command-line flag or ``--set key=value`` override is invalid."""


class CheckpointError(NnlabError):
    """A checkpoint or run directory is missing, corrupt, or unsafe to load."""
