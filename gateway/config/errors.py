"""Configuration errors, reported all at once with the exact path (and line) of each."""

from __future__ import annotations

from dataclasses import dataclass

from foundation.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a config: ``path`` like ``peers[1].spiffe_id`` (0-based indices)."""

    path: str
    message: str
    line: int | None = None

    def render(self, filename: str | None) -> str:
        where = ""
        if filename is not None:
            where = f"{filename}:{self.line}: " if self.line else f"{filename}: "
        elif self.line:
            where = f"line {self.line}: "
        return f"{where}{self.path or '<root>'}: {self.message}"


class ConfigInvalid(ConfigError):
    """A config file was rejected whole; ``problems`` lists every error found, in file order."""

    def __init__(self, problems: list[Problem], filename: str | None = None) -> None:
        self.problems = tuple(problems)
        self.filename = filename
        super().__init__(self.report())

    def report(self) -> str:
        return "\n".join(p.render(self.filename) for p in self.problems)


class UnknownValue(Exception):
    """A cross-field check used a value that failed to decode; that check is skipped.

    Why: cross-field rules (duplicate binds, peers named by exports) must be reported in the
    same run as the field problems, so they also run on a partly decoded config; a value that
    did not decode stands in as a placeholder that raises this on any use, so a rule that
    needs it is skipped rather than misled into a false report.
    """
