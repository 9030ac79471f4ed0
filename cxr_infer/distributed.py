"""Batch inference on Ray Data: ``cxr-infer PATH... --engine ray [--ray-address auto]``.

The driver (the ``cxr-infer`` process) lists the inputs as the plain command does
(:func:`cxr_infer.cli._inputs`: folders, files, ``-`` for a manifest of paths on stdin), gives
each overlay its name, and hands the list to Ray Data. An actor pool classifies it with
``map_batches``: each actor loads one :class:`~cxr_infer.api.Classifier` once and runs the
command's own per-input code on its batches (:func:`cxr_infer.cli.local_results`: decoding,
the gate, inference, overlays under ``OUT/heatmaps``, DICOM output, error and skipped rows).
The results come back in input order (Ray Data's ``preserve_order``) and the driver turns them
into rows, writes them, counts and scores them exactly as the plain command does, so both
engines write the same rows.

Paths are read by the actors: on a cluster, inputs, ``--out`` and ``--model`` must be on storage
every node sees at the same path (relative paths are taken from the driver's working folder).
An input that is a URI (``s3://``, ``gs://``, ``hdfs://``, ``file://``: what ``pyarrow.fs``
opens, with the cluster's credentials) is copied to the actor's temporary folder and classified
there; its row names the URI, and one that cannot be fetched gets a ``missing``/``unreadable`` row.
Ray is imported only when the engine runs (``pip install 'cxr-toolkit[ray]'``); torch never.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path, PurePath
from typing import Any

import numpy as np

from cxr_infer import errors
from cxr_infer.api import Classifier, Prediction
from cxr_infer.cli import OverlayNames, Result, RunOptions, UsageFailure, local_results
from cxr_infer.errors import error_text
from cxr_infer.inputs import Input
from cxr_infer.readers import quiet_decoder_warnings

DEFAULT_ACTOR_THREADS = 4  # per CPU actor: several small sessions scale better than one wide one
BLOCK_INPUTS = 512  # inputs per Ray block: the unit an actor takes at a time
FETCH_THREADS = 16  # URI downloads at once per actor (waiting on storage, not on the CPU)
URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")



@dataclass(frozen=True)
class LoadArgs:
    """How every actor loads its Classifier: the command's ``--model``, ``--device``,
    ``--threads`` (per actor here), ``--gate`` and ``--max-pixels``."""

    model: str | None
    device: str
    threads: int | None
    gate: str
    max_pixels: int


class RayEngine:
    """The results of a run, computed by an actor pool on a Ray cluster.

    Called as ``engine(classifier, options, inputs)`` where the plain command calls
    :func:`~cxr_infer.cli.local_results`; ``classifier`` is the driver's, used to check the
    request before anything runs and for the model's file.
    """

    def __init__(self, address: str | None, load: LoadArgs):
        self.address, self.load = address, load
        self.providers: list[str] = []  # the execution providers the actors' sessions got, as they report them

    def __call__(self, classifier: Classifier, options: RunOptions, inputs: Iterable[Input]) -> Iterator[Result]:
        local_results(classifier, options, ())  # refuses impossible --explain requests, as the plain run does
        ray = _import_ray()
        started = not ray.is_initialized()
        if started:
            try:
                ray.init(**({"address": self.address} if self.address else {"include_dashboard": False}), logging_level="WARNING")
            except (ConnectionError, RuntimeError, ValueError) as error:  # a wrong --ray-address, no cluster there
                raise UsageFailure(f"cannot start or reach Ray ({self.address or 'a local instance'}): {error}") from error
        return self._results(ray, started, classifier, options, inputs)

    def _results(self, ray: Any, started: bool, classifier: Classifier, options: RunOptions, inputs: Iterable[Input]) -> Iterator[Result]:
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # results in input order, as the plain command writes them
        context.enable_progress_bars = False  # the command draws its own
        try:
            dataset = listing(ray, inputs, options.overlay.suffix)
            load = replace(self.load, model=str(classifier.info.path))
            actors, per_actor = actor_pool(ray, load)
            classified = dataset.map_batches(
                Worker,
                fn_constructor_args=(replace(load, threads=per_actor["num_cpus"]), options, os.getcwd()),
                batch_size=BLOCK_INPUTS,
                batch_format="numpy",
                concurrency=actors,
                **per_actor,
            )
            try:
                for batch in classified.iter_batches(batch_size=None, batch_format="numpy"):
                    self.providers.extend(p for names in batch["providers"] for p in names.split(",") if p not in self.providers)
                    yield from (pickle.loads(blob) for blob in batch["result"])
            except ray.exceptions.RayActorError as error:  # an actor could not load the model (device, file, contract)
                raise UsageFailure(f"the Ray actors could not start: {actor_failure(error)}") from error
        finally:
            if started:
                ray.shutdown()


def actor_failure(error: Exception) -> str:
    """The reason an actor died, in one line: the last ``SomeError: ...`` line Ray's text carries
    (for example the DeviceError of ``--device cuda`` on actors without a GPU)."""
    reasons = re.findall(r"^\s*(?:[\w.]+\.)?(\w+Error: .+)$", str(error), flags=re.MULTILINE)
    return reasons[-1] if reasons else str(error).splitlines()[0]


class Worker:
    """One actor of the pool: one Classifier, loaded once, for every batch the actor gets."""

    def __init__(self, load: LoadArgs, options: RunOptions, cwd: str):
        with contextlib.suppress(OSError):
            os.chdir(cwd)  # relative paths read as on the driver (a shared file system on a cluster)
        self.options = options
        self.classifier = Classifier.load(load.model, device=load.device, threads=load.threads, gate=load.gate,
                                          max_pixels=load.max_pixels)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        items = [pickle.loads(blob) for blob in batch["input"]]
        quiet = quiet_decoder_warnings() if self.options.quiet else contextlib.nullcontext()
        with quiet, tempfile.TemporaryDirectory(prefix="cxr-fetched-") as folder:
            local, remote = fetched(items, Path(folder))
            results = [restored(result, remote) for result in local_results(self.classifier, self.options, local)]
        providers = ",".join(self.classifier.providers)
        return {"result": np.array([pickle.dumps(result) for result in results], dtype=object),
                "providers": np.array([providers] * len(results), dtype=object)}


@dataclass(frozen=True)
class Remote:
    """A URI input as listed, and why it could not be fetched (``None``: it was)."""

    item: Input
    error: str | None = None


def fetched(items: list[Input], folder: Path) -> tuple[list[Input], dict[str, Remote]]:
    """The inputs with each URI's file copied into ``folder`` (the local copy in its place), and
    the URI input of each local copy."""
    copies = {i: folder / f"{i}{PurePath(item.path).suffix}" for i, item in enumerate(items)
              if item.skipped is None and URI.match(item.path)}
    with ThreadPoolExecutor(FETCH_THREADS) as pool:
        failures = dict(zip(copies, pool.map(lambda i: fetch(items[i].path, copies[i]), copies)))
    local = [replace(item, path=str(copies[i])) if i in copies else item for i, item in enumerate(items)]
    return local, {str(copies[i]): Remote(items[i], failures[i]) for i in copies}


def fetch(uri: str, path: Path) -> str | None:
    """Copy ``uri`` to ``path``; the error row's text when that fails."""
    from pyarrow import fs

    try:
        filesystem, where = fs.FileSystem.from_uri(uri)
        with filesystem.open_input_stream(where) as source, open(path, "wb") as target:
            shutil.copyfileobj(source, target)
    except FileNotFoundError as error:
        path.unlink(missing_ok=True)
        return error_text(errors.MISSING, f"{uri}: {error}")
    except Exception as error:  # no such scheme, no credentials, a network failure: this input's row says so
        path.unlink(missing_ok=True)
        return error_text(errors.UNREADABLE, f"{uri}: {type(error).__name__}: {error}")
    return None


def restored(result: Result, remote: dict[str, Remote]) -> Result:
    """A local copy's result as the URI's: its input, its name in the row and in any error."""
    item, prediction, fields = result
    origin = remote.get(item.path)
    if origin is None:
        return item, replace(prediction, heatmap=None), fields  # the overlay is written; the map stays here
    if origin.error is not None:
        return origin.item, Prediction(origin.item.path, None, {}, error=origin.error), {}
    error = prediction.error and prediction.error.replace(item.path, origin.item.path)
    return origin.item, replace(prediction, source=origin.item.path, error=error, heatmap=None), fields


def listing(ray: Any, inputs: Iterable[Input], suffix: str) -> Any:
    """The inputs as a Ray dataset of pickled :class:`Input` (any file name survives, even one
    that is not UTF-8), in blocks of :data:`BLOCK_INPUTS`, each with its overlay name given here,
    in input order, as the plain command gives them (``-2`` for a second file of the same name)."""
    import pyarrow as pa

    names = OverlayNames(suffix)
    blocks, iterator = [], iter(inputs)
    while chunk := list(islice(iterator, BLOCK_INPUTS)):
        blobs = [pickle.dumps(named(item, names)) for item in chunk]
        blocks.append(pa.table({"input": pa.array(blobs, pa.binary())}))
    return ray.data.from_arrow(blocks or [pa.table({"input": pa.array([], pa.binary())})])


def named(item: Input, names: OverlayNames) -> Input:
    if item.skipped is not None:
        return item
    names.assign(item)
    return replace(item, name=PurePath(names.of(item.path)))


def actor_pool(ray: Any, load: LoadArgs) -> tuple[int, dict[str, Any]]:
    """How many actors, and what each reserves: one GPU each when the cluster has GPUs (and
    ``--device`` allows), else ``--threads`` CPUs each (default 4, at most the cluster's)."""
    resources = ray.cluster_resources()
    cpus, gpus = int(resources.get("CPU", 1)), int(resources.get("GPU", 0))
    threads = min(load.threads or DEFAULT_ACTOR_THREADS, max(1, cpus))
    if gpus and load.device != "cpu":
        return gpus, {"num_gpus": 1, "num_cpus": min(threads, max(1, cpus // gpus))}
    return max(1, cpus // threads), {"num_cpus": threads}


def _import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as error:
        raise UsageFailure(f"--engine ray needs Ray ({error}); install it with: pip install 'cxr-toolkit[ray]'") from error
    return ray
