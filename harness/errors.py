"""Exceptions with a meaning for the exit code.

Bad input must end with one clear line and exit code 2 before anything is recorded as a run, so
validation raises `ConfigError` and only the CLI turns it into the line and the code.
"""

from __future__ import annotations

import difflib

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
# A training run stopped by SIGTERM/SIGUSR1 (Slurm's preemption or time-limit warning) after
# saving a checkpoint: EX_TEMPFAIL, "try again"; the next start with train.resume=auto continues.
EXIT_PREEMPTED = 75


class ConfigError(ValueError):
    """Bad user input: an unknown key, an impossible value, a dtype or device this machine lacks."""


class RunInterrupted(BaseException):
    """SIGTERM (scancel, the launcher tearing down ranks) turned into an exception so that the
    run is recorded as interrupted. A BaseException, like KeyboardInterrupt, so that no
    `except Exception` in user code swallows it."""


def did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str:
    """' (did you mean X?)' for the closest choice, or '' when nothing is close; for error lines."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.66)
    return f" (did you mean {close[0]!r}?)" if close else ""
