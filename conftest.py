"""The ``data`` marker for every test of the repository (``tests/`` and ``plugins/*/tests``).

A test needs the real radiographs (:mod:`tests.data_root`) when it is marked ``data`` or uses
one of :data:`DATA_FIXTURES`; such a test gets the marker here, so ``-m "not data"`` leaves it
out, and it is skipped with the reason when the data are missing rather than failing deep inside.
"""

from __future__ import annotations

import pytest

from tests.data_root import MISSING, available

DATA_FIXTURES = {"shared_data", "data_dir", "dozen_images", "preprocessed", "external_jpegs"}


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if DATA_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.data)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("data") is not None and not available():
        pytest.skip(MISSING)
