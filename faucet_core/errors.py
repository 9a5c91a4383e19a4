"""Errors Faucet raises to its users (warehouse errors live in :mod:`faucet_core.warehouse`)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "ChunkReadError",
    "ConfigError",
    "FaucetError",
    "ReaderStateError",
    "ResumeError",
    "UnknownDatastore",
]


class FaucetError(Exception):
    """Base class of Faucet's errors."""


class ConfigError(FaucetError, ValueError):
    """A configuration is invalid. Holds every problem found, each with its field path.

    Attributes:
        problems: ``(field path, message)`` pairs, e.g. ``("source.table", "Field required")``.
        origin: Where the settings came from (a file path or ``"keyword arguments"``).
    """

    def __init__(self, problems: Sequence[tuple[str, str]], origin: str | None = None) -> None:
        self.problems = list(problems)
        self.origin = origin
        where = f" in {origin}" if origin else ""
        lines = [f"invalid Faucet config{where}:"]
        lines += [f"  {path}: {message}" if path else f"  {message}" for path, message in problems]
        super().__init__("\n".join(lines))


class UnknownDatastore(ConfigError):
    """The ``datastore`` names no installed warehouse plugin."""


class ChunkReadError(FaucetError):
    """A chunk could not be read (after retries, for transient failures)."""


class ReaderStateError(FaucetError):
    """A reader method was called out of order (e.g. ``get_batch`` before ``prep_for_epoch``)."""


class ResumeError(FaucetError):
    """A saved reader state does not fit this reader (another plan, seed or settings)."""
