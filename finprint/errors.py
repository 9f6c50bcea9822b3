"""Errors that reach a user as one readable line and a non-zero exit code."""

from __future__ import annotations

from pathlib import Path


class FinprintError(Exception):
    """A problem the user can fix; the CLI prints it as one line and exits with `exit_code`."""

    exit_code = 2


class DataError(FinprintError):
    """Bad input data: names the offending file and, where known, the line."""

    def __init__(self, path: str | Path, reason: str, line: int | None = None) -> None:
        self.path = Path(path)
        self.line = line
        self.reason = reason
        where = f"{self.path}:{line}" if line is not None else str(self.path)
        super().__init__(f"{where}: {reason}")


class ConfigError(FinprintError):
    """A bad configuration value: names the key path."""
