"""Version selection and transition policies: pure functions, no I/O.

Mirrors TF Serving's `sources/storage_path/file_system_storage_path_source.cc` (which versions are aspired)
and `core/availability_preserving_policy.cc` / `core/resource_preserving_policy.cc` (in which order versions
load and unload). Unlike TF Serving's manager, which executes one action per tick, `next_actions` returns every
action that may run now, so independent loads proceed in parallel.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import assert_never

from svc.lifecycle.messages import All, AspiredVersion, Latest, Specific, VersionPolicy
from svc.lifecycle.states import Harness


class Transition(enum.Enum):
    """`--aspired_version_policy`: in which order a model's versions load and unload."""

    AVAILABILITY_PRESERVING = "availability_preserving"  # load the new version, then unload the old one
    RESOURCE_PRESERVING = "resource_preserving"  # unload the old version, then load the new one


@dataclass(frozen=True, slots=True)
class Selection:
    aspired: tuple[AspiredVersion, ...]
    missing: tuple[int, ...] = ()  # specific versions asked for but not on storage (TF logs a warning)


def select_versions(listing: Mapping[int, str], policy: VersionPolicy) -> Selection:
    """The versions a model's policy aspires to, given the numeric children of its base path (highest first)."""
    available = sorted(listing, reverse=True)
    missing: tuple[int, ...] = ()
    match policy:
        case Latest(num_versions=n):
            chosen = available[: max(n, 1)]
        case All():
            chosen = available
        case Specific(versions=versions):
            wanted = set(versions)
            chosen = [v for v in available if v in wanted]
            missing = tuple(sorted(wanted - set(available)))
        case _:
            assert_never(policy)
    return Selection(tuple(AspiredVersion(v, listing[v]) for v in chosen), missing)


@dataclass(frozen=True, slots=True)
class Load:
    version: int


@dataclass(frozen=True, slots=True)
class Unload:
    version: int


@dataclass(frozen=True, slots=True)
class Forget:
    """A version that was never started and is no longer aspired: drop it without loading."""

    version: int


Action = Load | Unload | Forget


def next_actions(harness: Mapping[int, Harness], aspired: frozenset[int], transition: Transition) -> list[Action]:
    """Every action that may start now for one model, unloads first.

    `harness` holds every version the manager tracks for the model, `aspired` the latest aspired set.
    """
    actions: list[Action] = [
        Forget(v) for v, s in sorted(harness.items()) if s is Harness.NEW and v not in aspired
    ]
    ready_unaspired = sorted(v for v, s in harness.items() if s is Harness.READY and v not in aspired)
    new_aspired = sorted((v for v, s in harness.items() if s is Harness.NEW and v in aspired), reverse=True)
    match transition:
        case Transition.RESOURCE_PRESERVING:
            actions += [Unload(v) for v in ready_unaspired]
            busy_unaspired = any(
                not s.is_final and s is not Harness.NEW for v, s in harness.items() if v not in aspired
            )
            if not busy_unaspired:
                actions += [Load(v) for v in new_aspired]
        case Transition.AVAILABILITY_PRESERVING:
            aspired_states = [s for v, s in harness.items() if v in aspired]
            if not aspired or Harness.READY in aspired_states:
                actions += [Unload(v) for v in ready_unaspired]
            elif aspired_states and all(s.is_final for s in aspired_states):
                # Every replacement failed: keep the newest old version serving, let the others go.
                actions += [Unload(v) for v in ready_unaspired[:-1]]
            actions += [Load(v) for v in new_aspired]
        case _:
            assert_never(transition)
    return actions
