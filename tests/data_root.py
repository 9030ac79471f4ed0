"""Where the tests find the real radiographs: ``$CXR_DATA``, else ``../shared/data`` beside the
checkout (the team's data folder; see its README.md and this project's README, "Data for the tests").

Tests that read them carry the ``data`` marker (given in ``conftest.py`` at the repository
root), so ``pytest -m "not data"`` runs everything else on a machine without the data.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV = "CXR_DATA"
DATA = Path(os.environ.get(ENV) or Path(__file__).resolve().parents[1] / ".." / "shared" / "data")
MISSING = (
    f"needs the real radiographs at {DATA}, which is not there: point {ENV} at them, "
    "or leave the data tests out with -m 'not data'"
)


def available() -> bool:
    return DATA.is_dir()
