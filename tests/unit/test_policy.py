"""Version selection and transition policies, as tables (TF Serving tests its policies the same way)."""

from __future__ import annotations

import pytest

from svc.lifecycle.messages import All, Latest, Specific, VersionPolicy
from svc.lifecycle.policy import Forget, Load, Transition, Unload, next_actions, select_versions
from svc.lifecycle.states import Harness

AP, RP = Transition.AVAILABILITY_PRESERVING, Transition.RESOURCE_PRESERVING

N, L, R, U, D, E = Harness.NEW, Harness.LOADING, Harness.READY, Harness.UNLOADING, Harness.DISABLED, Harness.ERROR

LISTING = {1: "/m/1", 3: "/m/3", 2: "/m/2", 10: "/m/10"}


@pytest.mark.parametrize(
    ("policy", "aspired", "missing"),
    [
        (Latest(), [10], []),
        (Latest(2), [10, 3], []),
        (Latest(0), [10], []),  # 0 is treated as 1, as TF Serving does
        (Latest(9), [10, 3, 2, 1], []),
        (All(), [10, 3, 2, 1], []),
        (Specific((2, 3)), [3, 2], []),
        (Specific((2, 42)), [2], [42]),
        (Specific(()), [], []),
    ],
)
def test_select_versions(policy: VersionPolicy, aspired: list[int], missing: list[int]) -> None:
    selection = select_versions(LISTING, policy)
    assert [v.version for v in selection.aspired] == aspired
    assert [v.path for v in selection.aspired] == [LISTING[v] for v in aspired]
    assert list(selection.missing) == missing


def test_select_versions_empty_listing() -> None:
    assert select_versions({}, Latest()).aspired == ()


@pytest.mark.parametrize(
    ("harness", "aspired", "transition", "expected"),
    [
        # First load.
        ({1: N}, {1}, AP, [Load(1)]),
        # Upgrade: load the new version first, keep the old one serving.
        ({1: R, 2: N}, {2}, AP, [Load(2)]),
        ({1: R, 2: L}, {2}, AP, []),
        # The new one is ready: unload the old.
        ({1: R, 2: R}, {2}, AP, [Unload(1)]),
        # The new one failed: the old one keeps serving.
        ({1: R, 2: E}, {2}, AP, []),
        # Several old ones and the replacement failed: keep only the newest old one.
        ({1: R, 2: R, 3: E}, {3}, AP, [Unload(1)]),
        # Everything removed: unload everything.
        ({1: R, 2: R}, set(), AP, [Unload(1), Unload(2)]),
        # Never-started versions that are no longer aspired are dropped without a load.
        ({1: R, 2: N}, {1}, AP, [Forget(2)]),
        # Several aspired versions load together, highest first.
        ({1: N, 2: N, 3: N}, {1, 2, 3}, AP, [Load(3), Load(2), Load(1)]),
        # Nothing to do.
        ({1: R}, {1}, AP, []),
        ({1: D, 2: R}, {2}, AP, []),
        # Resource preserving: unload first, load only once the old one is gone.
        ({1: R, 2: N}, {2}, RP, [Unload(1)]),
        ({1: U, 2: N}, {2}, RP, []),
        ({1: D, 2: N}, {2}, RP, [Load(2)]),
        ({1: N}, {1}, RP, [Load(1)]),
        ({1: L, 2: N}, {2}, RP, []),
    ],
)
def test_next_actions(
    harness: dict[int, Harness], aspired: set[int], transition: Transition, expected: list[object]
) -> None:
    assert next_actions(harness, frozenset(aspired), transition) == expected

