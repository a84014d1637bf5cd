"""Configuration errors, reported all at once with the exact path (and line) of each."""

from __future__ import annotations

from dataclasses import dataclass

from discovery.errors import ConfigError


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
