"""The exceptions every layer raises, and the exit code each one means at the command line.

* ``InputError`` (a ``ValueError``): something the user gave is wrong -- a config value, a file, a
  dataset, weights that do not fit. The message says what was wrong and what to do. Exit code 2.
* ``TrainingError``: training itself failed (a non-finite loss). Exit code 3.
* ``Preempted``: a stop signal (SIGTERM/SIGINT) was honoured after a checkpoint. Exit code 143,
  as for a process killed by SIGTERM; rerun the same command to resume.

Usage errors of a command line (a missing or unknown flag) exit with 1 (absl's ``UsageError``).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_USAGE = 1
EXIT_BAD_INPUT = 2
EXIT_TRAINING_ERROR = 3
EXIT_PREEMPTED = 143


class InputError(ValueError):
    """Bad input: a config value, a file, data or weights that cannot be used as given."""


class ConfigError(InputError):
    """A config key, value or combination is invalid."""


class TrainingError(RuntimeError):
    """Training failed (e.g. a non-finite loss); the last good checkpoint is kept."""


class Preempted(RuntimeError):
    """Raised after a signal-triggered save; rerun the command to resume."""
