"""``cxr-infer``: classify radiographs (files, folders, DICOM), explain with Grad-CAM, report metrics.

``main`` is a click group whose default command is ``classify``: when the first argument is
not a subcommand name (nor ``--help``/``--version``), the arguments are classified, so
``cxr-infer exported/samples --explain`` works. To classify a file named like a subcommand,
write ``cxr-infer classify info`` or ``cxr-infer ./info``. Other packages add subcommands with
``main.add_command(...)``.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from collections import Counter, deque
from dataclasses import asdict, dataclass
from pathlib import Path, PurePath
from typing import Any

import click
import numpy as np

from cxr_infer import __version__
from cxr_infer.api import Annotator, Classifier, ExplainError, Prediction
from cxr_infer.card import card_fields, format_markdown, format_text
from cxr_infer.bundled import ModelNotFoundError, bundled_models, default_model_name, exported_dir, resolve_model
from cxr_infer.contract import ContractError
from cxr_infer.crash import EXIT_INTERNAL, one_line, write_crash_log
from cxr_infer.gate import DEFAULT_MODE as DEFAULT_GATE_MODE, GATE_MODES
from cxr_infer.errors import SKIPPED, error_kind, error_text, is_failure
from cxr_infer.inputs import Input, counted, discover, is_labelled_folder, read_labels
from cxr_infer.writers import WriterUnavailable
from cxr_infer.overlay import DISPLAY_LONG_SIDE, FORMATS as OVERLAY_FORMATS, OverlayStyle, render_overlay, write_overlay
from cxr_infer.plugins import PluginError, describe_plugins, get_plugin_manager
from cxr_infer.progress import Progress
from cxr_infer.provenance import RUN_FILE, model_provenance, run_record, utc_now, write_json
from cxr_infer.readers import DEFAULT_MAX_PIXELS, quiet_decoder_warnings
from cxr_infer.report.page import REPORT_FILE, Report
from cxr_infer.results import apply_process_result, columns, make_row
from cxr_infer.session import DEVICES, DeviceError, ModelLoadError, open_session, read_contract

Result = tuple[Input, Prediction, dict[str, Any]]
Engine = Callable[[Classifier, "RunOptions", Iterable[Input]], Iterator[Result]]  # where the results come from
EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2  # and EXIT_INTERNAL (3): a bug, see cxr_infer.crash
METRICS_FILE = "metrics.json"
MODEL_ERRORS = (ModelNotFoundError, ModelLoadError, ContractError, DeviceError, ExplainError, PluginError)


class UsageFailure(click.ClickException):
    """A usage or model error: printed as ``Error: ...``, exit code 2."""

    exit_code = EXIT_USAGE


class InternalFailure(click.ClickException):
    """An unforeseen error (a bug): one line on stderr, the traceback in a log file, exit code 3."""

    exit_code = EXIT_INTERNAL


class DefaultGroup(click.Group):
    """A group that runs ``classify`` when the first argument names no subcommand, and turns
    any unforeseen exception into an :class:`InternalFailure` (never a traceback)."""

    default_command = "classify"

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help", "--version"):
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort, KeyboardInterrupt):
            raise
        except Exception as error:
            log = write_crash_log(error, sys.argv)
            raise InternalFailure(f"internal error ({one_line(error)}); please report it with the details in {log}") from error


@click.group(cls=DefaultGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cxr-infer")
def main() -> None:
    """Classify chest X-rays (covid / pneumonia / normal) with an exported ONNX model.

    \b
    cxr-infer PATH... [options]       classify (same as: cxr-infer classify PATH...)
    cxr-infer info [MODEL]            the model card
    cxr-infer models                  the bundled models
    cxr-infer plugins                 loaded plugins as JSON
    cxr-infer serve-dicom [options]   a DICOM listener: classifies what a PACS sends it
    """


@dataclass
class RunOptions:
    """What ``classify`` was asked to do, in one place for the steps that follow."""

    paths: tuple[str, ...]
    out: Path
    explain: bool = False
    explain_class: str | None = None
    format: str = "csv"
    batch_size: int = 16
    recursive: bool = False
    labels: Path | None = None
    quiet: bool = False
    dicom_out: Path | None = None
    overlay: OverlayStyle = OverlayStyle()


def _overlay_size(ctx: click.Context, param: click.Parameter, value: str) -> int:
    """``--overlay-size``: a long side in pixels, or ``full``/``0`` for the image's own size."""
    if value.lower() == "full":
        return 0
    try:
        size = int(value)
    except ValueError:
        size = -1
    if size < 0:
        raise click.BadParameter(f"{value!r} is neither a long side in pixels nor 'full'")
    return size


@main.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--model", "model_name", metavar="NAME_OR_FILE", help="Bundled model name or .onnx file (default: the bundled default).")
@click.option("--explain", is_flag=True, help="Write Grad-CAM overlays of the predicted class under OUT/heatmaps/.")
@click.option("--explain-class", metavar="NAME", help="Explain this class instead of the predicted one (implies --explain).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("cxr-results"), show_default=True, help="Output folder.")
@click.option("--format", "fmt", default="csv", show_default=True, help="Results format: csv, jsonl, parquet (needs pyarrow), or a plugin writer's name.")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True, help="auto uses CUDA only if the session really gets it.")
@click.option("--batch-size", type=click.IntRange(1, 4096), default=16, show_default=True)
@click.option("--threads", type=click.IntRange(1, 256), default=None, help="Cores to use, split between onnxruntime and the image workers (default: all usable).")
@click.option("--recursive", "-r", is_flag=True, help="Descend into subfolders of folder arguments.")
@click.option("--labels", type=click.Path(dir_okay=False, exists=True, path_type=Path), help="CSV with columns path,label: report metrics.")
@click.option("--quiet", "-q", is_flag=True, help="No progress line, no start line, no decoder warnings (each row says what failed).")
@click.option("--max-pixels", type=click.IntRange(1), default=DEFAULT_MAX_PIXELS, show_default=True, help="Refuse images declaring more pixels (width x height x frames), before decoding.")
@click.option("--dicom-out", type=click.Path(file_okay=False, path_type=Path), help="Write a DICOM Secondary Capture and a TID 1500 SR for every DICOM input here.")
@click.option("--report", "report", is_flag=True, help="Write OUT/report.html: the run on one offline page (thumbnails, overlays, classes; metrics and plots when labelled).")
@click.option("--gate", type=click.Choice(GATE_MODES), default=DEFAULT_GATE_MODE, show_default=True, help="Input gate: reject inputs that are not frontal chest radiographs, only flag them (warn), or off.")
@click.option("--overlay-size", default=str(DISPLAY_LONG_SIDE), show_default=True, callback=_overlay_size, metavar="PIXELS|full", help="Long side of the overlays (never enlarged); full: the image's own size.")
@click.option("--overlay-format", type=click.Choice(tuple(OVERLAY_FORMATS)), default="jpg", show_default=True, help="Overlay file format.")
@click.option("--overlay-quality", type=click.IntRange(0, 100), help="JPEG quality 1-100 [90], or PNG zlib level 0-9 [1].")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True, help="local: this process; ray: an actor pool on Ray Data (pip install 'cxr-toolkit[ray]'), --threads per actor.")
@click.option("--ray-address", metavar="ADDRESS", help="With --engine ray: the cluster to join (auto: this node's) [default: a local Ray on this host].")
def classify(paths, model_name, explain, explain_class, out, fmt, device, batch_size, threads, recursive, labels, quiet, max_pixels, dicom_out, report, gate,
             overlay_size, overlay_format, overlay_quality, engine, ray_address) -> None:
    """Classify PATH... (files, folders, or - for a list of paths on stdin).

    Writes OUT/results.csv (one row per input, in input order, as it goes), OUT/heatmaps/ with
    --explain, OUT/metrics.json when the inputs are labelled (class subfolders or --labels),
    OUT/run.json (model, toolkit version, providers, counts) and, with --report, OUT/report.html.
    Exit code 0: all inputs read (classified, or rejected by the input gate); 1: some failed (see their rows); 2: usage or model error;
    3: internal error (a bug; the message names a log file with the details).
    """
    try:
        overlay = OverlayStyle(overlay_size, overlay_format, overlay_quality)
    except ValueError as error:
        raise UsageFailure(str(error)) from error
    options = RunOptions(paths, out, explain or explain_class is not None, explain_class, fmt, batch_size, recursive, labels, quiet, dicom_out, overlay)
    results = None
    if engine == "ray":
        from cxr_infer.distributed import LoadArgs, RayEngine

        if report:
            raise UsageFailure("--report is made by --engine local only")
        results = RayEngine(ray_address, LoadArgs(model_name, device, threads, gate, max_pixels))
    # On a Ray cluster the driver only checks the request and writes the rows: it loads on the
    # CPU (a head node often has no GPU), and the actors load with the --device asked. A local
    # Ray runs on this host, so the driver checks the device here, before any actor starts.
    on_cluster = results is not None and ray_address is not None
    classifier = load_classifier(model_name, "cpu" if on_cluster else device, threads, gate, max_pixels)
    with classifier, quiet_decoder_warnings() if quiet else contextlib.nullcontext():
        failed = run_classification(classifier, options, Report(out, classifier.classes) if report else None, results)
    sys.exit(EXIT_SOME_FAILED if failed else EXIT_OK)


def load_classifier(
    model_name: str | None, device: str, threads: int | None, gate: str = DEFAULT_GATE_MODE, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Classifier:
    try:
        return Classifier.load(model_name, device=device, threads=threads, gate=gate, max_pixels=max_pixels)
    except MODEL_ERRORS as error:
        raise UsageFailure(str(error)) from error


def run_classification(classifier: Classifier, options: RunOptions, report: Report | None = None, results: Engine | None = None) -> int:
    """Classify, write rows as they come, print the summary (and metrics), write ``run.json``
    (and the page, given a ``report``); return the failure count."""
    started_at = utc_now()
    pm = get_plugin_manager()
    writer_spec = _writer(options.format)
    labelled = options.labels is not None or any(is_labelled_folder(Path(p), classifier.classes) for p in options.paths)
    inputs, total = counted(_inputs(classifier, options), options.paths)
    found = local_results(classifier, options, inputs, report) if results is None else results(classifier, options, inputs)
    options.out.mkdir(parents=True, exist_ok=True)
    results_path = options.out / f"results{writer_spec.extension}"
    try:
        writer = writer_spec.factory(results_path, columns(classifier.classes, labelled))
    except WriterUnavailable as error:
        raise UsageFailure(str(error)) from error
    if not options.quiet:
        click.echo(f"model {classifier.info.path} (sha256 {classifier.info.sha256[:12]}), providers: {', '.join(classifier.providers)}", err=True)
    progress = Progress(total, enabled=not options.quiet)
    scored = Scores(classifier.classes)
    settings = _settings(classifier, options)
    providers = getattr(results, "providers", None)  # an engine running elsewhere reports what its sessions got
    write_json(options.out / RUN_FILE, run_record(classifier, started_at, {}, settings, {"results": results_path.name}, providers, finished=False))
    try:
        for item, prediction, fields in found:
            row = make_row(prediction, classifier.classes, fields, item.label, labelled)
            apply_process_result(pm, row)
            writer.write(row)
            if report is not None:
                report.add(row)
            scored.add(item.label, prediction, row["error"])
            progress.update(failed=is_failure(row["error"]))
    finally:
        writer.close()
        progress.close()
    tally = scored.tally(progress)
    click.echo(scored.summary(progress.count, progress.rate, results_path))
    metrics = _report_metrics(scored, options.out, options.labels, classifier) if scored.labelled else None
    files = {"results": results_path.name, "metrics": metrics and METRICS_FILE, "report": report and REPORT_FILE}
    record = run_record(classifier, started_at, tally, settings, files, providers)
    write_json(options.out / RUN_FILE, record)
    if report is not None:
        click.echo(f"report: {report.write(record, metrics, scored.truth, scored.probs)}")
    return progress.errors


def _settings(classifier: Classifier, options: RunOptions) -> dict[str, Any]:
    """What ``run.json`` records of the run's arguments."""
    return {"paths": list(options.paths), "labels": options.labels and str(options.labels), "explain": options.explain,
            "explain_class": options.explain_class, "gate": classifier.gate, "batch_size": options.batch_size}


def local_results(classifier: Classifier, options: RunOptions, inputs: Iterable[Input], report: Report | None = None) -> Iterator[Result]:
    """The results of this process: ``(input, prediction, row fields)`` in input order, skipped
    entries included. Another engine (``--engine ray``) computes the same, elsewhere."""
    fed: deque[Input] = deque()
    return paired(open_stream(classifier, options, fed, inputs, report), fed)


def open_stream(
    classifier: Classifier, options: RunOptions, fed: deque[Input], inputs: Iterable[Input], report: Report | None = None
) -> Iterator[tuple[Prediction, dict[str, Any]]]:
    """The lazy result stream of the run; each input is appended to ``fed`` as it enters, so the
    caller pairs results (which come in input order) with their inputs. Refuses impossible
    explain requests before anything is written."""
    names = OverlayNames(options.overlay.suffix)

    def feed() -> Iterator[str]:
        for item in inputs:
            fed.append(item)
            if item.skipped is None:
                names.assign(item)
                yield item.path

    try:
        return classifier.stream(
            feed(),
            explain=options.explain or (options.dicom_out is not None and classifier.info.explain),
            explain_class=options.explain_class,
            annotators=build_annotators(options, names, classifier, report),
            batch_size=options.batch_size,
            decode_long_side=(options.overlay.long_side or None) if options.explain else 0,
        )
    except ExplainError as error:
        raise UsageFailure(str(error)) from error


def paired(stream: Iterator[tuple[Prediction, dict[str, Any]]], fed: deque[Input]) -> Iterator[tuple[Input, Prediction, dict[str, Any]]]:
    """Pair each result (they come in input order) with its input, and give the skipped folder
    entries, which never enter the stream, their rows in their places between them."""
    for prediction, fields in stream:
        yield from _skipped_rows(fed)
        yield fed.popleft(), prediction, fields
    yield from _skipped_rows(fed)


def _skipped_rows(fed: deque[Input]) -> Iterator[tuple[Input, Prediction, dict[str, Any]]]:
    while fed and fed[0].skipped is not None:
        item = fed.popleft()
        yield item, Prediction(item.path, None, {}, error=error_text(SKIPPED, item.skipped)), {}


def build_annotators(options: RunOptions, names: "OverlayNames", classifier: Classifier, report: Report | None = None) -> list[Annotator]:
    """Per-result steps run in worker threads (each returns row fields); add new ones here."""
    annotators: list[Annotator] = []
    if options.explain:
        annotators.append(overlay_annotator(options.out / "heatmaps", names, options.explain_class, options.overlay))
    if options.dicom_out is not None:
        from cxr_infer.pacs.identity import ModelIdentity
        from cxr_infer.pacs.results import dicom_out_annotator

        annotators.append(dicom_out_annotator(options.dicom_out, ModelIdentity.of(classifier)))
    if report is not None:
        annotators.append(report.thumbnails.annotator(names.of))
    return annotators


def overlay_annotator(folder: Path, names: "OverlayNames", explain_class: str | None, style: OverlayStyle) -> Annotator:
    """Write the Grad-CAM overlay of a prediction under ``folder``, keeping the input's folders."""

    def overlay(prediction: Prediction, image: np.ndarray) -> dict[str, Any]:
        label = explain_class or prediction.label
        path = folder / names.of(prediction.source)
        drawn = render_overlay(image, prediction.heatmap, label, prediction.probabilities[label], style.long_side)
        write_overlay(path, drawn, style)
        return {"heatmap": str(path)}

    return overlay


class OverlayNames:
    """Overlay file names: the input's path below its argument with the overlay format's suffix,
    never outside the folder.

    Names are assigned in the main thread as inputs enter the stream (a different file with
    the same name gets ``-2``, ``-3``...), before a worker thread looks them up.
    """

    def __init__(self, suffix: str) -> None:
        self._suffix = suffix
        self._by_source: dict[str, PurePath] = {}
        self._taken: set[PurePath] = set()

    def assign(self, item: Input) -> None:
        if item.path not in self._by_source:
            self._by_source[item.path] = self._unique(item.name.with_suffix(self._suffix))

    def of(self, source: str) -> PurePath:
        return self._by_source[source]

    def _unique(self, name: PurePath) -> PurePath:
        candidate, n = name, 1
        while candidate in self._taken:
            n += 1
            candidate = name.with_name(f"{name.stem}-{n}{name.suffix}")
        self._taken.add(candidate)
        return candidate


class Scores:
    """Counts per class and, for labelled inputs, what the metrics need (inputs the gate
    rejected are counted apart and left out of the metrics, in every gate mode)."""

    def __init__(self, classes: tuple[str, ...]):
        self.classes = classes
        self.counts = dict.fromkeys(classes, 0)
        self.rejected = 0
        self.error_kinds: Counter[str] = Counter()
        self.truth: list[int] = []
        self.probs: list[list[float]] = []
        self.paths: list[str] = []  # of the scored inputs, for the per-source audit

    @property
    def labelled(self) -> bool:
        return bool(self.truth)

    def add(self, true_label: str | None, prediction: Prediction, error: str) -> None:
        kind = error_kind(error)
        if kind is not None:
            self.error_kinds[kind] += 1
        self.rejected += prediction.gate.rejected
        if prediction.label is None or prediction.gate.rejected:
            return
        self.counts[prediction.label] += 1
        if true_label is not None:
            self.truth.append(self.classes.index(true_label))
            self.probs.append([prediction.probabilities[c] for c in self.classes])
            self.paths.append(str(prediction.source))

    def summary(self, inputs: int, rate: float, results_path: Path) -> str:
        per_class = ", ".join(f"{name} {count}" for name, count in self.counts.items())
        where = " (the error column says why)" if self.error_kinds else ""
        return f"{inputs} inputs: {per_class}; {self.rejected} rejected by the gate; {self._errors()}; {rate:.1f} img/s; results: {results_path}{where}"

    def tally(self, progress: Progress) -> dict[str, Any]:
        """The run's figures for ``run.json`` and the report page."""
        return {
            "inputs": progress.count, "counts": dict(self.counts), "gate_rejected": self.rejected,
            "errors": dict(self._failures().most_common()), "skipped": self.error_kinds[SKIPPED],
            "img_per_s": round(progress.rate, 2), "seconds": round(time.perf_counter() - progress.started, 3),
        }  # fmt: skip

    def _failures(self) -> Counter[str]:
        return Counter({kind: n for kind, n in self.error_kinds.items() if kind != SKIPPED})

    def _errors(self) -> str:
        """``4 errors (3 corrupt, 1 missing), 1 skipped``: failures by kind, the most frequent
        first, then the folder entries left out on purpose (they have rows but are no failure)."""
        failed = self._failures()
        text = f"{sum(failed.values())} errors"
        if failed:
            text += " (" + ", ".join(f"{n} {kind}" for kind, n in failed.most_common()) + ")"
        if self.error_kinds[SKIPPED]:
            text += f", {self.error_kinds[SKIPPED]} skipped"
        return text


def _report_metrics(scored: Scores, out: Path, labels_csv: Path | None, classifier: Classifier) -> dict[str, Any]:
    """Compute, print and write the metrics (with the model's provenance) to ``metrics.json``."""
    from cxr_infer.metrics import classification_metrics, format_metrics
    from cxr_infer.sources import sources_of_paths

    sources = sources_of_paths(scored.paths, labels_csv)
    report = {**model_provenance(classifier), **classification_metrics(scored.truth, scored.probs, list(scored.classes), sources)}
    report["gate_rejected"] = scored.rejected
    write_json(out / METRICS_FILE, report)
    click.echo(format_metrics(report))
    if scored.rejected:
        click.echo(f"left out of these metrics: {scored.rejected} inputs rejected by the input gate")
    click.echo(f"metrics: {out / METRICS_FILE}")
    return report


def _writer(name: str):
    from cxr_infer.writers import available_writers

    try:
        writers = available_writers()
    except PluginError as error:
        raise UsageFailure(str(error)) from error
    if name not in writers:
        raise UsageFailure(f"unknown --format {name!r}; available: {', '.join(sorted(writers))}")
    return writers[name]


def _inputs(classifier: Classifier, options: RunOptions) -> Iterator[Input]:
    from cxr_infer.readers import available_readers

    extensions = {ext for reader in available_readers().values() for ext in reader.extensions}
    try:
        labels = read_labels(options.labels, classifier.classes) if options.labels else None
    except ValueError as error:
        raise UsageFailure(str(error)) from error
    return discover(
        options.paths,
        extensions=extensions,
        classes=classifier.classes,
        recursive=options.recursive,
        labels=labels,
        stdin=sys.stdin,
        skip=(options.out, options.dicom_out),
    )


@main.command()
@click.argument("model", required=False, metavar="[MODEL]")
@click.option("--json", "as_json", is_flag=True, help="Print the card as JSON.")
@click.option("--markdown", is_flag=True, help="Print the card as Markdown (the exported/*.md files).")
def info(model: str | None, as_json: bool, markdown: bool) -> None:
    """Print a model's card from its metadata (default: the bundled default model)."""
    card = _model_card(model)
    if as_json:
        click.echo(json.dumps(card, indent=2, default=str))
    elif markdown:
        click.echo(format_markdown(card), nl=False)
    else:
        click.echo(format_text(card))


def _model_card(model: str | None) -> dict[str, Any]:
    try:
        path = resolve_model(model)
        info = read_contract(open_session(path, "cpu"), path)
    except MODEL_ERRORS as error:
        raise UsageFailure(str(error)) from error
    return card_fields(info)


@main.command()
def models() -> None:
    """List the bundled models (the default is marked with *)."""
    bundled = bundled_models()
    if not bundled:
        click.echo(f"no bundled models ({exported_dir()} holds no .onnx file); use --model FILE.onnx")
        return
    default = default_model_name()
    for name in bundled:
        card = _model_card(name)
        marker = "*" if name == default else " "
        click.echo(f"{marker} {name:<24} {card['model']:<12} {', '.join(card['classes'])}  explain: {'yes' if card['explain'] else 'no'}")


@main.command()
def plugins() -> None:
    """List loaded plugins (built-in and installed) as JSON: name, version, hooks."""
    try:
        click.echo(json.dumps(describe_plugins(get_plugin_manager()), indent=2))
    except PluginError as error:
        raise UsageFailure(str(error)) from error


from cxr_infer.pacs.cli import serve_dicom  # noqa: E402  (the PACS listener, kept in its own package)

main.add_command(serve_dicom)
