"""Publication safety: when a version directory found on storage may be loaded. Pure: no I/O, no clock.

TF Serving (`file_system_storage_path_source.cc`) aspires a version as soon as its directory name appears, so a
`cp -r` or an upload in progress gets loaded half-way and fails for good (tfs#1086), and a storage hiccup that
lists nothing unloads every model (tfs#1480). Here a version is *published* (may be aspired) only when

1. it is **complete**: `saved_model.pb` or `saved_model.pbtxt` is present, and when any of
   `variables/variables.index` / `variables/variables.data-XXXXX-of-NNNNN` is present, the index is present with
   all NNNNN data shards (a variable-free model has no variables files at all, or an empty `variables/`).
   Legacy SessionBundle exports (`export.meta`) and TFLite-only directories (`model.tflite`) count as complete so
   that their load fails with TF Serving's own error text instead of waiting forever. A directory holding a
   Keras file (`model.keras`, `.h5`) instead of a SavedModel is *refused*: never published, logged as a warning
   that says how to export a SavedModel (only SavedModel directories are served);
2. and its file listing (relative names and sizes) is **unchanged across two consecutive polls**; or, when
   `--version_ready_marker` names a file, that file is present (the publisher's explicit signal replaces the
   stability wait; completeness is still required).

**First poll.** The stability rule delays a load by one poll interval, but users expect a server to start at once
with the models already on disk. So a version directory that is present in the *first* listing of a model (the
first poll after the model was configured, and only when that poll succeeded) is published as soon as it is found
complete, without the second look — unless it was ever found incomplete, which means it is still being written.
A directory still being copied at start-up is thus caught by the completeness check alone; one whose every file
already exists but whose last file is still growing is not (use `--version_ready_marker` if that can happen).
With `--file_system_poll_wait_seconds=0` (a single poll) the same rule applies.

**Unknown is not deleted.** A listing error, or a listing with no version at all after versions were published,
is *unknown*: nothing changes and the caller logs, counts and retries on the next poll. A published version whose
directory is gone from a listing that otherwise answers is an explicit removal: it stops being published and
drops out of the aspired set, as in TF Serving. While no version is publishable yet but some are being written,
nothing is announced (instead of an empty set that would unload what is serving).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import assert_never

from svc.lifecycle.messages import All, Latest, Specific, VersionPolicy
from svc.lifecycle.policy import Selection, select_versions

_SHARD = re.compile(r"variables/variables\.data-(\d{5})-of-(\d{5})")
_INDEX = "variables/variables.index"
_SAVED_MODEL = ("saved_model.pb", "saved_model.pbtxt")
_OTHER_FORMATS = ("export.meta", "model.tflite")  # loaded only to fail with TF Serving's error texts
KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")  # Keras model files: not SavedModels, refused at discovery

Snapshot = tuple[tuple[str, int], ...]


def keras_files(names: Iterable[str]) -> tuple[str, ...]:
    """The Keras model files (`.keras`, `.h5`, `.hdf5`) among top-level names, sorted."""
    return tuple(sorted(n for n in names if "/" not in n and n.lower().endswith(KERAS_SUFFIXES)))


def keras_refusal(path: str) -> str:
    """Why a Keras file is not served, and what to do instead."""
    return (
        f"{path} is a Keras file, not a SavedModel: only SavedModel directories (<base_path>/<version>/"
        "saved_model.pb) are served; export one with model.export('<base_path>/1') (Keras 3) or "
        "tf.saved_model.save(model, '<base_path>/1') (tf_keras)"
    )


def completeness(files: Mapping[str, int], marker: str = "") -> str | None:
    """None when the listed version directory is complete, else why not (for logs)."""
    names = {name for name in files if not name.endswith("/")}
    if not any(f in names for f in _SAVED_MODEL):
        if any(f in names for f in _OTHER_FORMATS):
            return None if not marker or marker in names else f"marker file {marker} not present"
        if keras := keras_files(names):
            return keras_refusal(keras[0])
        return "no saved_model.pb or saved_model.pbtxt"
    shards = [m for name in names if (m := _SHARD.fullmatch(name))]
    if shards or _INDEX in names:
        if _INDEX not in names:
            return f"{_INDEX} missing"
        if not shards:
            return "variables/variables.index present without data shards"
        counts = {int(m[2]) for m in shards}
        if len(counts) != 1:
            return f"variables data shards of different counts {sorted(counts)}"
        total = counts.pop()
        missing = sorted(set(range(total)) - {int(m[1]) for m in shards})
        if missing:
            shown = ", ".join(f"variables.data-{i:05d}-of-{total:05d}" for i in missing[:3])
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            return f"missing variables data shard(s) {shown}{more}"
    if marker and marker not in names:
        return f"marker file {marker} not present"
    return None


class ListingVerdict(Enum):
    OK = "ok"
    EMPTY = "empty"  # no version listed, none ever published: TF's "No versions of servable ... found"
    UNKNOWN = "unknown"  # no version listed although versions were published: keep everything


@dataclass(frozen=True, slots=True)
class Inspection:
    """What one look at a version's files found; `reported` is True when `reason` changed since last time;
    `refused` when the directory holds a format that is never served (a Keras file)."""

    version: int
    published: bool
    reason: str | None
    reported: bool
    refused: bool = False


class Publication:
    """One model's versions on storage and which of them are published. Fed by the poller, poll by poll."""

    def __init__(self, marker: str = "") -> None:
        self.marker = marker
        self.published: set[int] = set()
        self.listing: dict[int, str] = {}
        self._first: set[int] | None = None  # versions of the first listing never seen incomplete
        self._snapshots: dict[int, Snapshot] = {}  # last listing of each unpublished version looked at
        self._reasons: dict[int, str | None] = {}
        self._waiting: set[int] = set()  # looked at in this poll and not publishable yet

    def observe_error(self) -> None:
        """The base path could not be listed. A first poll that fails forfeits the first-poll rule."""
        if self._first is None:
            self._first = set()

    def observe_listing(self, versions: Mapping[int, str]) -> ListingVerdict:
        """Start a poll with the base path's numeric children. Removes published versions that are gone."""
        self._waiting = set()
        if self._first is None:
            self._first = set(versions)
        if not versions and self.published:
            return ListingVerdict.UNKNOWN
        self.listing = dict(versions)
        self.published &= versions.keys()
        self._first &= versions.keys()
        for table in (self._snapshots, self._reasons):
            for gone in table.keys() - versions.keys():
                del table[gone]
        return ListingVerdict.OK if versions else ListingVerdict.EMPTY

    def to_inspect(self, policy: VersionPolicy) -> Iterator[int]:
        """The unpublished versions the policy could pick, best first. Lazy: for `latest`, iteration stops once
        enough versions are published, so feed each one to `observe_files` before asking for the next."""
        listed = sorted(self.listing, reverse=True)
        match policy:
            case Latest(num_versions=n):
                needed, found = max(n, 1), 0
                for version in listed:
                    if found >= needed:
                        return
                    if version not in self.published:
                        yield version
                    if version in self.published:
                        found += 1
            case All():
                yield from (v for v in listed if v not in self.published)
            case Specific(versions=versions):
                wanted = set(versions)
                yield from (v for v in listed if v in wanted and v not in self.published)
            case _:
                assert_never(policy)

    def observe_files(self, version: int, files: Mapping[str, int]) -> Inspection:
        """Record one listing of an unpublished version's files; publishes it when the rules allow."""
        snapshot = tuple(sorted(files.items()))
        previous = self._snapshots.get(version)
        self._snapshots[version] = snapshot
        first = self._first if self._first is not None else set()
        reason = completeness(files, self.marker)
        if reason is not None:
            first.discard(version)
        elif self.marker or version in first or previous == snapshot:
            self.published.add(version)
            del self._snapshots[version]
            self._reasons.pop(version, None)
            self._waiting.discard(version)
            return Inspection(version, True, None, True)
        else:
            reason = "listing changed since the previous poll" if previous else "waiting for a second poll"
        reported = self._reasons.get(version, "") != reason
        self._reasons[version] = reason
        self._waiting.add(version)
        refused = not any(f in files for f in _SAVED_MODEL) and bool(keras_files(files))
        return Inspection(version, False, reason, reported, refused)

    def selection(self, policy: VersionPolicy) -> Selection | None:
        """The aspired versions among the published ones; None (announce nothing) while nothing is publishable
        yet but some version is still being written."""
        selection = select_versions({v: self.listing[v] for v in self.published}, policy)
        if not selection.aspired and self._waiting:
            return None
        missing = tuple(v for v in selection.missing if v not in self.listing)
        return Selection(selection.aspired, missing)
