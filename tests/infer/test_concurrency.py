"""The split of cores between onnxruntime and the image workers (cxr_infer.concurrency)."""

from __future__ import annotations

import pytest

from cxr_infer.concurrency import ThreadSplit, split_threads


@pytest.mark.parametrize(
    "cores, expected",
    [(1, ThreadSplit(1, 1)), (2, ThreadSplit(2, 2)), (4, ThreadSplit(4, 4)), (6, ThreadSplit(4, 2)),
     (16, ThreadSplit(12, 4)), (64, ThreadSplit(48, 16))],
)
def test_small_hosts_share_all_cores_and_large_ones_split_them(cores, expected):
    assert split_threads(cores) == expected


def test_default_is_the_usable_cpus(monkeypatch):
    monkeypatch.setattr("cxr_infer.concurrency.usable_cpus", lambda: 16)
    assert split_threads(None) == ThreadSplit(12, 4)
