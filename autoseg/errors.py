"""The problems a user can cause and fix, and the warnings about traps in their data.

Every exception that a mistake in the user's data, settings or files can raise derives from
:class:`AutosegError`; its message says what is wrong, where (row, file or key) and how to
fix it. The command line prints such an error in one line and exits with code 2; any other
exception is a bug in autoseg (exit code 1).

Example:
    >>> issubclass(SettingsError, AutosegError) and issubclass(SettingsError, ValueError)
    True

"""

from __future__ import annotations


class AutosegError(Exception):
    """A problem with the user's data, settings or files, explained with its fix."""


class SettingsError(AutosegError, ValueError):
    """An argument or hyperparameter value is out of its allowed range or of the wrong type."""


class PredictorFolderError(AutosegError, ValueError):
    """A predictor folder is missing, damaged, tampered with or from another format version."""


class OutputExistsError(AutosegError, FileExistsError):
    """Writing would replace files autoseg did not write, or the user's own inputs."""


class AutosegWarning(UserWarning):
    """A likely mistake in the user's data that does not stop the run (shown in notebooks)."""
