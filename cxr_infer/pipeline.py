"""Streaming batches: decode the next batch in worker threads while the current one infers.

The scheduling is kept apart from what is decoded and inferred, so the order guarantee (results
in input order, one per input) and the overlap are tested once, with any model.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future
from itertools import islice
from typing import TypeVar

Item = TypeVar("Item")
Loaded = TypeVar("Loaded")
Output = TypeVar("Output")
Result = TypeVar("Result")

PREFETCH_BATCHES = 2


def batched(items: Iterable[Item], size: int) -> Iterator[list[Item]]:
    """Consecutive lists of ``size`` items (the last one shorter: no padding), read lazily."""
    if size < 1:
        raise ValueError(f"batch size must be at least 1, got {size}")
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def stream(
    items: Iterable[Item],
    load: Callable[[Item], Loaded],
    infer: Callable[[list[Loaded]], list[Output]],
    finish: Callable[[Loaded, Output], Result],
    *,
    pool: Executor,
    batch_size: int,
) -> Iterator[Result]:
    """Yield ``finish(load(item), output)`` for every item, in input order.

    ``load`` and ``finish`` run in ``pool`` (they must catch their own per-item errors);
    ``infer`` runs in the caller's thread on one whole batch and returns one output per loaded
    item. While a batch infers, the next :data:`PREFETCH_BATCHES` batches are being loaded and
    the previous batch is being finished, so the model never waits for overlays to be written.
    Only those batches are in memory: ``items`` is consumed as the stream advances.
    """
    batches = batched(items, batch_size)
    in_flight: deque[list[Future]] = deque(
        [pool.submit(load, item) for item in batch] for batch in islice(batches, PREFETCH_BATCHES)
    )
    finishing: list[Future] = []
    while in_flight:
        loaded = [future.result() for future in in_flight.popleft()]
        upcoming = next(batches, None)
        if upcoming is not None:
            in_flight.append([pool.submit(load, item) for item in upcoming])
        outputs = infer(loaded)
        if len(outputs) != len(loaded):
            raise RuntimeError(f"inference returned {len(outputs)} outputs for {len(loaded)} inputs")
        previous, finishing = finishing, [pool.submit(finish, item, output) for item, output in zip(loaded, outputs)]
        yield from (future.result() for future in previous)
    yield from (future.result() for future in finishing)
