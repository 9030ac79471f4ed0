"""The streaming scheduler with fake load/infer steps: order, no padding, laziness, overlap."""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from cxr_infer.pipeline import PREFETCH_BATCHES, batched, stream


@pytest.fixture
def pool():
    with ThreadPoolExecutor(max_workers=4) as executor:
        yield executor


def test_results_come_in_input_order_whatever_the_load_times(pool):
    def load(item):
        time.sleep(random.random() / 500)
        return item

    results = list(stream(range(50), load, lambda batch: [x * 10 for x in batch], lambda x, out: (x, out), pool=pool, batch_size=7))
    assert results == [(i, i * 10) for i in range(50)]


def test_batches_are_never_padded(pool):
    sizes = []

    def infer(batch):
        sizes.append(len(batch))
        return batch

    assert len(list(stream(range(10), lambda x: x, infer, lambda x, out: out, pool=pool, batch_size=4))) == 10
    assert sizes == [4, 4, 2]
    assert list(batched([], 3)) == []
    with pytest.raises(ValueError):
        list(batched([1], 0))


def test_input_is_consumed_lazily(pool):
    consumed = []

    def items():
        for i in range(1_000_000):
            consumed.append(i)
            yield i

    results = stream(items(), lambda x: x, lambda batch: batch, lambda x, out: out, pool=pool, batch_size=5)
    assert [next(results) for _ in range(3)] == [0, 1, 2]
    assert len(consumed) <= (PREFETCH_BATCHES + 2) * 5  # prefetched, inferring, finishing


def test_next_batch_loads_while_the_current_one_infers(pool):
    """Inference of batch 0 waits until a load of batch 1 has started in a worker thread."""
    loading_next = threading.Event()

    def load(item):
        if item >= 4:
            loading_next.set()
        return item

    def infer(batch):
        if batch[0] == 0:
            assert loading_next.wait(timeout=5), "the next batch was not being loaded during inference"
        return batch

    assert list(stream(range(8), load, infer, lambda x, out: out, pool=pool, batch_size=4)) == list(range(8))


def test_an_inference_that_miscounts_is_an_error(pool):
    with pytest.raises(RuntimeError, match="2 outputs for 3 inputs"):
        list(stream(range(3), lambda x: x, lambda batch: batch[:2], lambda x, out: out, pool=pool, batch_size=3))


def test_next_batch_infers_while_the_previous_one_finishes(pool):
    """Finishing batch 0 (say, writing overlays) waits until batch 1 has been inferred."""
    second_inferred = threading.Event()

    def infer(batch):
        if batch[0] == 4:
            second_inferred.set()
        return batch

    def finish(item, output):
        if item < 4:
            assert second_inferred.wait(timeout=5), "inference waited for the previous batch to finish"
        return output

    assert list(stream(range(8), lambda x: x, infer, finish, pool=pool, batch_size=4)) == list(range(8))
