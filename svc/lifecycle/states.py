"""Servable states: the manager's internal harness states and TF Serving's public ModelVersionStatus states.

Mirrors `core/loader_harness.h` (harness states) and `apis/get_model_status.proto` (public states). Pure.
"""

from __future__ import annotations

import enum


class Harness(enum.Enum):
    """Internal life of one version inside the manager (TF's LoaderHarness::State, simplified)."""

    NEW = "new"
    LOADING = "loading"
    READY = "ready"
    UNLOADING = "unloading"
    DISABLED = "disabled"  # unloaded cleanly
    ERROR = "error"  # load failed for good

    @property
    def is_final(self) -> bool:
        return self in (Harness.DISABLED, Harness.ERROR)


class State(enum.IntEnum):
    """`ModelVersionStatus.State` as GetModelStatus publishes it."""

    UNKNOWN = 0
    START = 10
    LOADING = 20
    AVAILABLE = 30
    UNLOADING = 40
    END = 50


PUBLIC_STATE: dict[Harness, State] = {
    Harness.NEW: State.START,
    Harness.LOADING: State.LOADING,
    Harness.READY: State.AVAILABLE,
    Harness.UNLOADING: State.UNLOADING,
    Harness.DISABLED: State.END,
    Harness.ERROR: State.END,
}

ALLOWED: dict[Harness, frozenset[Harness]] = {
    Harness.NEW: frozenset({Harness.LOADING, Harness.DISABLED}),
    Harness.LOADING: frozenset({Harness.READY, Harness.ERROR, Harness.NEW}),
    Harness.READY: frozenset({Harness.UNLOADING}),
    Harness.UNLOADING: frozenset({Harness.DISABLED}),
    Harness.DISABLED: frozenset(),
    Harness.ERROR: frozenset(),
}


def check_transition(old: Harness, new: Harness) -> None:
    """Raises AssertionError (a bug, not a request error) on an illegal harness transition."""
    if new not in ALLOWED[old]:
        raise AssertionError(f"illegal servable transition {old.value} -> {new.value}")
