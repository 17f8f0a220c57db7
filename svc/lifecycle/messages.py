"""Every message the actors exchange: frozen, slotted dataclasses and nothing else.

Commands are imperative (`LoadVersion`), events past tense (`VersionLoaded`). Mirrors TF Serving's
`core/aspired_versions_manager.h` contract: an `AspiredVersions` message is the complete desired set of
one model, and a version left out of it is to be unloaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from svc.errors import Code
from svc.lifecycle.states import State


@dataclass(frozen=True, slots=True)
class ServableId:
    name: str
    version: int

    def __str__(self) -> str:
        return f"{{name: {self.name} version: {self.version}}}"


@dataclass(frozen=True, slots=True)
class Latest:
    """`ServableVersionPolicy.Latest`: the highest `num_versions` versions."""

    num_versions: int = 1


@dataclass(frozen=True, slots=True)
class All:
    """`ServableVersionPolicy.All`: every version."""


@dataclass(frozen=True, slots=True)
class Specific:
    """`ServableVersionPolicy.Specific`: exactly these versions, where they exist."""

    versions: tuple[int, ...] = ()


VersionPolicy = Latest | All | Specific


@dataclass(frozen=True, slots=True)
class ModelSource:
    """What the poller watches for one model."""

    name: str
    base_path: str
    policy: VersionPolicy = field(default_factory=Latest)
    labels: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class ModelConfigs:
    """ConfigWatcher -> StoragePoller: the complete set of models to serve."""

    models: tuple[ModelSource, ...]


@dataclass(frozen=True, slots=True)
class AspiredVersion:
    version: int
    path: str


@dataclass(frozen=True, slots=True)
class AspiredVersions:
    """StoragePoller -> VersionManager: the complete desired set of versions of one model."""

    name: str
    versions: tuple[AspiredVersion, ...]


@dataclass(frozen=True, slots=True)
class ModelRemoved:
    """StoragePoller -> VersionManager: a model left the configuration; unload all its versions."""

    name: str


@dataclass(frozen=True, slots=True)
class LabelsChanged:
    """ConfigWatcher -> VersionManager: the version labels of one model."""

    name: str
    labels: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class LoadVersion:
    """VersionManager -> LoaderPool."""

    id: ServableId
    path: str


@dataclass(frozen=True, slots=True)
class UnloadVersion:
    """VersionManager -> LoaderPool: unload a version that has left the serving map (once no lease holds it)."""

    id: ServableId
    servable: object  # what the loader produced; opaque to the lifecycle


@dataclass(frozen=True, slots=True)
class VersionLoaded:
    id: ServableId
    servable: object


@dataclass(frozen=True, slots=True)
class LoadFailed:
    id: ServableId
    code: Code
    message: str


@dataclass(frozen=True, slots=True)
class VersionUnloaded:
    id: ServableId


@dataclass(frozen=True, slots=True)
class ServableStateChanged:
    """VersionManager -> StateMonitor: one public state change (TF's ServableStateMonitor event)."""

    id: ServableId
    state: State
    code: Code = Code.OK
    message: str = ""


ManagerInbox = AspiredVersions | ModelRemoved | LabelsChanged | VersionLoaded | LoadFailed | VersionUnloaded
LoaderInbox = LoadVersion | UnloadVersion
