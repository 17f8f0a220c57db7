"""Where the tests find the repository and TF Serving's test data (`../shared` beside the repo)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
TESTDATA = SHARED / "tfserving-testdata"

if not TESTDATA.is_dir():  # fail loudly: these tests are meaningless without TF Serving's models
    raise RuntimeError(f"TF Serving test data not found at {TESTDATA}; ../shared must sit beside the repo")


def testdata(name: str) -> Path:
    path = TESTDATA / name
    if not path.exists():
        raise FileNotFoundError(path)
    return path
