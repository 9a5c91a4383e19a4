"""Checking a saved stream position against the reader or loader that is to resume it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from faucet_core.errors import ResumeError

__all__ = ["STATE_FORMAT", "check_state"]

#: The version of the saved-state layout.
STATE_FORMAT = 1


def check_state(state: Mapping[str, Any], plan: str, settings: Mapping[str, Any]) -> None:
    """Refuse a state saved from another plan or with other ``settings``.

    Mixing streams would repeat or skip rows, so any difference is an error naming it.

    Raises:
        ResumeError: The state is not a Faucet state, or another plan or setting made it.
    """
    if state.get("format") != STATE_FORMAT:
        raise ResumeError(f"not a Faucet stream state: {sorted(state)}")
    if state["plan"] != plan:
        raise ResumeError(
            "the saved state is from another plan: the data, source, split or chunk_size "
            "changed since it was saved"
        )
    for name, value in settings.items():
        if state.get(name) != value:
            raise ResumeError(
                f"{name} was {state.get(name)!r} when the state was saved, now {value!r}"
            )
