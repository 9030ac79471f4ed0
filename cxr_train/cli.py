"""``cxr-train``: fit, evaluate, check splits, export and verify models."""

from __future__ import annotations

import json
from pathlib import Path

import click

from cxr_infer import __version__
from cxr_infer.plugins import PluginError, describe_plugins
from cxr_train.plugins import get_plugin_manager


class Commands(click.Group):
    """Reports a plugin that raises as one line naming it (``Error: plugin 'x' failed in hook ...``),
    not as a traceback, whichever command asked for the registry."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except PluginError as error:
            raise click.ClickException(str(error)) from error


@click.group(cls=Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cxr-train")
def main() -> None:
    """Train, evaluate and export chest X-ray classifiers."""


@main.command()
def plugins() -> None:
    """List loaded plugins (built-in and installed) as JSON: name, version, hooks."""
    click.echo(json.dumps(describe_plugins(get_plugin_manager()), indent=2))


# --- fit, evaluate, check-splits (issue 2): heavy imports inside the commands keep --help fast ---


@main.command()
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False), help="Folder with train/ and val/ class folders.")
@click.option("--model", required=True, help="Registered architecture (simplecnn, resnet50, or a plugin's).")
@click.option("--epochs", required=True, type=click.IntRange(min=1), help="Maximum epochs.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run folder: best.pt, last.pt, log.jsonl.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=2))
@click.option("--lr", default=1e-3, show_default=True, type=float, help="Peak learning rate.")
@click.option("--weight-decay", default=1e-4, show_default=True, type=float)
@click.option("--optimizer", default="adamw", show_default=True, type=click.Choice(["adamw", "sgd"]))
@click.option("--schedule", default="cosine", show_default=True, type=click.Choice(["cosine", "onecycle"]))
@click.option("--augment", multiple=True, metavar="NAME[:k=v,...]", help="Augmentation to apply (repeatable, in order); see `cxr-train augmentations`.")
@click.option("--balanced-sampling", is_flag=True, help="Class-balanced batches (needs --no-class-weights).")
@click.option("--class-weights/--no-class-weights", default=True, show_default=True, help="Weight the cross-entropy per image by --balance (off: plain mean, or --balanced-sampling).")
@click.option("--balance", default="class", show_default=True, type=click.Choice(["class", "class-source"]), help="class: inverse class frequency; class-source: every class 1/K, split between its sources by n**--source-power, so no source dominates a class.")
@click.option("--source-power", default=0.5, show_default=True, type=click.FloatRange(0, 1), help="With --balance class-source: 1 keeps sources' natural shares, 0 makes them equal.")
@click.option("--sources", type=click.Path(exists=True, dir_okay=False), help="CSV path,source (paths relative to it) [default: the MANIFEST.csv beside the data, if any].")
@click.option("--mixup", default=0.0, show_default=True, type=click.FloatRange(min=0), help="Mixup Beta(a, a) parameter, e.g. 0.2 (0: off).")
@click.option("--intensity", default="percentile", show_default=True, type=click.Choice(["percentile", "equalize"]), help="Intensity normalization stored in the model (equalize: per-image histogram equalization).")
@click.option("--pretrained", is_flag=True, help="Start from torchvision ImageNet weights (fails clearly when they cannot be had).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--patience", default=10, show_default=True, type=int, help="Stop after this many epochs without val macro-F1 gain (0: never).")
@click.option("--resume", type=click.Path(exists=True, dir_okay=False), help="Continue from a last.pt.")
@click.option("--limit-per-class", type=click.IntRange(min=1), help="Use at most N images per class and split (quick runs).")
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads for torch and decoding [default: torch's].")
@click.option("--image-size", type=click.IntRange(min=8), help="Input size [default: the model's].")
@click.option("--precision", default="auto", show_default=True, type=click.Choice(["auto", "bf16", "fp32"]), help="auto: bf16 autocast only where the hardware does bf16 natively.")
def fit(**options) -> None:
    """Train a model on DATA/train, choosing the best epoch by DATA/val macro-F1."""
    from cxr_train.fit import FitConfig, fit as run_fit

    options["augment"] = list(options["augment"])
    best = run_fit(FitConfig(**options), command=command_line(click.get_current_context()))
    if best is not None:  # under torchrun, rank 0's line only
        click.echo(str(best))


def command_line(ctx: click.Context) -> str:
    """The invocation as a shell line, rebuilt from the parsed options (defaults left out).

    Rebuilt rather than read from ``sys.argv`` so it is right however the command was called
    (console script, ``python -m``, a test runner); it goes into checkpoints and model cards.
    """
    import shlex

    parts = ["cxr-train", ctx.info_name or ""]
    for param in ctx.command.params:
        value = ctx.params[param.name]
        if not isinstance(param, click.Option):
            continue
        if param.is_flag:
            if bool(value) != (param.default is True):
                parts.append(param.opts[0] if value else param.secondary_opts[0])
        elif value not in (None, ()) and value != param.default:
            parts += [part for item in (value if param.multiple else [value]) for part in (param.opts[0], str(item))]
    return shlex.join(parts)


@main.command()
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--data", "data_dirs", required=True, multiple=True, type=click.Path(exists=True, file_okay=False, path_type=Path), help="Labelled folder (repeatable).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Write <set>.json and <set>.png confusion matrix per data set here.")
@click.option("--record", is_flag=True, help="Store the reports in the checkpoint's metrics (keyed by data-set name).")
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads [default: torch's].")
@click.option("--sources", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="CSV path,source for the per-source audit [default: the MANIFEST.csv beside each data folder].")
def evaluate(checkpoint: Path, data_dirs: tuple[Path, ...], out: Path | None, record: bool, threads: int | None,
             sources: Path | None) -> None:
    """Score CHECKPOINT on each --data folder; prints the tables (stderr) and the JSON reports (stdout).

    Probabilities are the calibrated ones (the checkpoint's temperature), as the exported model
    gives them; recall per (class, source) is reported when sources are known."""
    import torch

    from cxr_train.evaluate import evaluate_checkpoint

    if threads:
        torch.set_num_threads(threads)
    reports = evaluate_checkpoint(checkpoint, list(data_dirs), out=out, record=record, threads=threads or 1, sources=sources)
    click.echo(json.dumps(reports, indent=2))


@main.command()
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path), help="The validation split the checkpoint was chosen on.")
@click.option("--sources", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="CSV path,source for the val report's audit [default: the MANIFEST.csv beside the data].")
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads [default: torch's].")
def calibrate(checkpoint: Path, data: Path, sources: Path | None, threads: int | None) -> None:
    """Fit CHECKPOINT's softmax temperature on a val split and store it in place (``fit`` does this
    at its end; this is for a run that was stopped, or an older checkpoint). Prints the report."""
    import torch

    from cxr_infer.sources import sources_for
    from cxr_train.calibrate import calibrate_file
    from cxr_train.checkpoint import Checkpoint
    from cxr_train.data import discover, load_tensors

    if threads:
        torch.set_num_threads(threads)
    loaded = Checkpoint.load(checkpoint)
    val = discover(data, classes=loaded.classes).with_sources(sources_for(data, sources))
    report = calibrate_file(checkpoint, val, load_tensors(val, loaded.preprocess, threads=threads or 1))
    click.echo(json.dumps(report, indent=2))


@main.command()
def augmentations() -> None:
    """List registered augmentations with their default parameters as JSON."""
    from cxr_train.augment import available_augmentations

    specs = available_augmentations()
    click.echo(json.dumps({name: {"plugin": s.plugin, "params": s.params} for name, s in specs.items()}, indent=2))


@main.command("check-splits")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--max-hamming", default=8, show_default=True, type=int, help="Near: 16x16 average-hash distance (of 256 bits) at most this.")
@click.option("--min-corr", default=0.975, show_default=True, type=float, help="Near: 32x32 thumbnail correlation at least this.")
def check_splits(folder: Path, max_hamming: int, min_corr: float) -> None:
    """Find identical and near-identical images across FOLDER's train/val/test splits.

    Prints one line per pair; exits 1 when any pair is found, 0 otherwise. A folder without
    split folders is checked for duplicates within itself.
    """
    from cxr_train.splits import find_pairs, fingerprint

    prints = fingerprint(folder)
    pairs = find_pairs(prints, max_hamming, min_corr)
    for pair in pairs:
        click.echo(f"{pair.kind}\t{pair.a}\t{pair.b}\thamming={pair.hamming}\tcorr={pair.correlation:.4f}")
    click.echo(f"{len(prints.paths)} images, {len(pairs)} duplicate pair(s)", err=True)
    if pairs:
        raise SystemExit(1)


# --- export and verify (issue 3): heavy imports stay inside the commands so --help stays fast ---


@main.command()
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="ONNX file to write.")
@click.option("--explain/--no-explain", default=True, show_default=True, help="Include the Grad-CAM outputs (activations, gradients).")
@click.option("--int8", is_flag=True, help="Write the int8 QDQ model (needs --calibration).")
@click.option("--fp16", is_flag=True, help="Write the float16 model for GPUs (float32 input, outputs, backward pass and head).")
@click.option("--calibration", type=click.Path(exists=True, file_okay=False, path_type=Path), help="Labelled folder of training images for int8 calibration.")
@click.option("--calibration-limit", type=int, default=200, show_default=True, help="Calibration images (class-balanced pick).")
@click.option("--compare", type=click.Path(exists=True, file_okay=False, path_type=Path), help="Labelled folder for the int8-vs-fp32 agreement report [default: --calibration].")
@click.option("--compare-limit", type=int, default=None, help="Images of --compare to use [default: all].")
@click.option("--opset", type=int, default=None, help="ONNX opset [default: the exporter's].")
@click.option("--name", default="", help="Model name recorded in the metadata [default: the architecture]; --int8 appends '-int8'.")
def export(
    checkpoint: Path,
    out: Path,
    explain: bool,
    int8: bool,
    fp16: bool,
    calibration: Path | None,
    calibration_limit: int,
    compare: Path | None,
    compare_limit: int | None,
    opset: int | None,
    name: str,
) -> None:
    """Export CHECKPOINT to a single-file ONNX model with self-describing metadata."""
    import tempfile
    import time

    from cxr_train.checkpoint import Checkpoint
    from cxr_train.export import export_onnx
    from cxr_train.fp16 import convert_fp16
    from cxr_train.quantize import quantize_int8

    if int8 != (calibration is not None):
        raise click.UsageError("--int8 and --calibration DIR go together (int8 is calibrated on real training images)")
    if int8 and fp16:
        raise click.UsageError("--int8 and --fp16 are two different variants; export them one at a time")
    loaded = Checkpoint.load(checkpoint)
    with tempfile.TemporaryDirectory(prefix="cxr-export-") as tmp:
        target = Path(tmp) / "fp32.onnx" if int8 or fp16 else out
        result = export_onnx(loaded, target, explain=explain, opset=opset, name=name)
        outputs = ", ".join(result.info.outputs)
        click.echo(f"exported {loaded.model} in {result.seconds:.1f} s: outputs {outputs}; opset {result.info.opset}", err=True)
        if int8:
            started = time.perf_counter()
            info = quantize_int8(target, out, calibration, compare or calibration, calibration_limit, compare_limit)
            click.echo(f"quantized to int8 in {time.perf_counter() - started:.1f} s", err=True)
            click.echo(json.dumps(info.quantization["agreement"], indent=2))
        if fp16:
            convert_fp16(target, out)
    click.echo(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)", err=True)


@main.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path), help="Labelled folder of real images.")
@click.option("--limit", type=int, default=None, help="At most this many images (class-balanced pick).")
@click.option("--logits-tol", type=float, default=None, help="Max logit difference relative to the largest |logit|.")
@click.option("--probs-tol", type=float, default=None, help="Max absolute probability difference.")
@click.option("--gradcam-tol", type=float, default=None, help="Max absolute difference of normalized Grad-CAM maps (every class).")
@click.option("--gradcam-predicted-tol", type=float, default=None, help="The same for the predicted class's maps only.")
@click.option("--min-agreement", type=float, default=None, help="Smallest accepted top-1 agreement.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Also write the JSON report here.")
def verify(
    model: Path,
    checkpoint: Path,
    data: Path,
    limit: int | None,
    logits_tol: float | None,
    probs_tol: float | None,
    gradcam_tol: float | None,
    gradcam_predicted_tol: float | None,
    min_agreement: float | None,
    json_path: Path | None,
) -> None:
    """Compare MODEL (ONNX) with CHECKPOINT in eager PyTorch on real images.

    Prints a summary (stderr) and the JSON report (stdout); exits 1 beyond the tolerances
    (defaults: strict for float models; for int8 ones, top-1 agreement >= 0.97 and the
    predicted class's Grad-CAM within 0.35).
    """
    import dataclasses

    from cxr_train import verify as verification
    from cxr_train.export import read_info

    base = verification.INT8_TOLERANCES if read_info(model).quantized else verification.FP32_TOLERANCES
    given = {
        "logits_rel": logits_tol,
        "probs": probs_tol,
        "gradcam": gradcam_tol,
        "gradcam_predicted": gradcam_predicted_tol,
        "top1_agreement": min_agreement,
    }
    tolerances = dataclasses.replace(base, **{k: v for k, v in given.items() if v is not None})
    report = verification.verify(model, checkpoint, data, limit, tolerances)
    click.echo(verification.format_report(report), err=True)
    text = json.dumps(report, indent=2, sort_keys=True)
    click.echo(text)
    if json_path is not None:
        json_path.write_text(text + "\n")
    if report["failures"]:
        raise SystemExit(1)


@main.command("fit-gate")
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False), help="Split collection of frontal radiographs (train/ and val/ class folders).")
@click.option("--ood", required=True, type=click.Path(exists=True, file_okay=False), help="ood/ folder (category folders + MANIFEST.csv): the real negatives.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run folder: gate.onnx, report.json, cache/.")
@click.option("--hold-out", multiple=True, metavar="CATEGORY_OR_SOURCE", help="Leave this ood/ category or source_repo out of training and validation (repeatable); the report scores it.")
@click.option("--epochs", default=30, show_default=True, type=click.IntRange(min=1))
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=2))
@click.option("--lr", default=3e-3, show_default=True, type=float, help="Peak learning rate (one-cycle).")
@click.option("--generated", default=1600, show_default=True, type=click.IntRange(min=8), help="Generated negatives for training (a quarter as many, another seed, for validation).")
@click.option("--max-false-reject", default=0.0, show_default=True, type=click.FloatRange(0, 0.5), help="Share of val radiographs the chosen threshold may reject.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--threads", default=1, show_default=True, type=click.IntRange(min=1))
def fit_gate(**options) -> None:
    """Train the input gate ("is this a frontal chest radiograph?") and export it to ONNX."""
    from cxr_train.gate import GateConfig, fit_gate as run_fit_gate

    options["hold_out"] = list(options["hold_out"])
    click.echo(str(run_fit_gate(GateConfig(**options), command=command_line(click.get_current_context()))))


@main.command("gate-threshold")
@click.argument("gate", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--data", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path), help="Split collection whose val/ radiographs choose the threshold.")
@click.option("--max-false-reject", default=0.0, show_default=True, type=click.FloatRange(0, 0.5), help="Share of val radiographs the threshold may reject.")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(min=1))
def gate_threshold(gate: Path, data: Path, max_false_reject: float, threads: int) -> None:
    """Choose GATE's threshold again on DATA/val and store it in the file (the network is unchanged)."""
    from cxr_train.gate import rethreshold

    click.echo(rethreshold(gate, data, max_false_reject, threads).to_json())
