"""Errors a user can fix. The CLI prints them on one line (no traceback) and exits with code 2.

Anything else that escapes is a bug in llava-more and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input: the message names the file, the record and the fix."""


class ConfigError(UserError):
    """params.yaml (or a study in it) is invalid."""


class UnknownBackboneError(ConfigError):
    """An LLM or vision id that is not in the registry."""

    def __init__(self, kind: str, given: str, valid: list[str]):
        self.kind, self.given, self.valid = kind, given, valid
        super().__init__(f"unknown {kind} id {given!r}; valid ids: {', '.join(sorted(valid))}")


class DataError(UserError):
    """A dataset file or record is unusable."""


class EvaluationFailed(UserError):
    """lmms-eval did not produce every expected result."""


class TrainingInterrupted(Exception):
    """Training stopped on a signal after saving a checkpoint; the job should be requeued."""
