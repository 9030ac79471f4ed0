"""``python -m benchmarks run [--part cpu|gpu|all] [--tiny]``, ``python -m benchmarks gate``,
``python -m benchmarks pipeline``, ``python -m benchmarks decode-agreement`` and
``python -m benchmarks report``."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click

from benchmarks import report
from benchmarks.harness import PARTS, Config, run_part

HERE = Path(__file__).resolve().parent
TINY = HERE.parent / ".cache" / "benchmarks" / "tiny"


def _ints(value: str) -> tuple[int, ...]:
    return tuple(int(v) for v in value.split(","))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Measure cxr-toolkit's speed and write benchmarks/RESULTS.md."""


@main.command()
@click.option("--part", type=click.Choice((*PARTS, "all")), default="all", show_default=True)
@click.option("--tiny", is_flag=True, help="Smoke-test scale: a small random SimpleCNN, seconds not minutes "
              "(results go to .cache/benchmarks/tiny unless --out is given).")
@click.option("--models", help="Comma-separated architectures (default: simplecnn,resnet50).")
@click.option("--batches", help="Comma-separated batch sizes (default: 1,8,32).")
@click.option("--repeats", type=click.IntRange(1), help="Interleaved repeats per variant (default: 5).")
@click.option("--threads", type=click.IntRange(1), help="Threads for onnxruntime and torch (default: usable CPUs).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help=f"Results folder [default: {HERE.name}/].")
@click.option("--work", type=click.Path(file_okay=False, path_type=Path), help="Cache of exported models.")
@click.option("--onnx", multiple=True, type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Measure this ONNX file (repeatable: explain, plain and int8 files of one model).")
@click.option("--checkpoint", multiple=True, type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Export and measure this checkpoint (repeatable); with --onnx, the torch side's weights.")
def run(part, tiny, models, batches, repeats, threads, out, work, onnx, checkpoint) -> None:
    """Run the measurements, write results-<part>.json and regenerate RESULTS.md.

    By default each architecture's newest trained runs/*/best.pt is exported (explain, plain,
    int8) when torch is installed, or a random-init one if none exists; without torch the
    shipped exported/*.onnx files are measured.
    """
    config = Config.tiny(work or TINY) if tiny else Config()
    out = out or (TINY if tiny else HERE)
    overrides = {"models": models and tuple(models.split(",")), "batches": batches and _ints(batches),
                 "repeats": repeats, "threads": threads, "work": work, "onnx": onnx, "checkpoints": checkpoint}
    config = replace(config, **{k: v for k, v in overrides.items() if v})
    for name in PARTS if part == "all" else (part,):
        click.echo(f"{name}: {run_part(name, config, out)}", err=True)
    click.echo(report.render(out))


@main.command("gate")
@click.option("--gate", "gate_file", type=click.Path(dir_okay=False, exists=True, path_type=Path), help="Gate ONNX file [default: the bundled one].")
@click.option("--loco", multiple=True, type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="A gate trained with one ood/ category held out (cxr-train fit-gate --hold-out C); repeatable.")
@click.option("--models", default="simplecnn,resnet50,resnet50-int8", show_default=True, help="Bundled classifiers to compare the gate's cost with.")
@click.option("--repeats", type=click.IntRange(1), default=5, show_default=True)
@click.option("--per-kind", type=click.IntRange(1), default=50, show_default=True, help="Generated negatives per kind.")
@click.option("--cost-images", type=click.IntRange(1), default=64, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=HERE, show_default=True)
def gate_command(gate_file, loco, models, repeats, per_kind, cost_images, out) -> None:
    """The input gate: rejection per ood/ category (held-out ones apart), false rejects on real
    radiographs, cost against classification; writes results-gate.json and RESULTS.md."""
    from benchmarks.gate import run_gate

    click.echo(f"gate: {run_gate(gate_file, list(loco), models.split(','), repeats, per_kind, cost_images, out)}", err=True)
    click.echo(report.render(out))


@main.command("int8")
@click.option("--fp32", "fp32_files", multiple=True, type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="fp32 explain file to quantize (repeatable) [default: the shipped exported/*.onnx].")
@click.option("--int8", "int8_files", multiple=True, type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="An existing int8 file to measure beside the recipes (repeatable) [default: the shipped ones].")
@click.option("--recipe", "recipes", multiple=True, help="Recipe names to try [default: all of benchmarks.int8.RECIPES].")
@click.option("--batches", default="1,8,32", show_default=True)
@click.option("--repeats", type=click.IntRange(1), default=5, show_default=True)
@click.option("--threads", type=click.IntRange(1), help="Threads for onnxruntime (default: usable CPUs).")
@click.option("--calibration-images", type=click.IntRange(1), default=200, show_default=True)
@click.option("--work", type=click.Path(file_okay=False, path_type=Path), default=HERE.parent / ".cache" / "benchmarks" / "int8", show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=HERE, show_default=True)
def int8_command(fp32_files, int8_files, recipes, batches, repeats, threads, calibration_images, work, out) -> None:
    """int8 recipes: top-1 agreement with fp32 on cxr3-external and int8/fp32 speed, side by side;
    writes results-int8.json and RESULTS.md (needs the train extras: onnx, the quantizer)."""
    from benchmarks.harness import CALIBRATION, usable_cpus
    from benchmarks.int8 import RECIPES, run_int8
    from benchmarks.models import EXPORTED, read_info

    shipped = sorted(EXPORTED.glob("*.onnx"))
    fp32_files = list(fp32_files) or [p for p in shipped if not read_info(p).quantized]
    int8_files = list(int8_files) or [p for p in shipped if read_info(p).quantized == "int8-qdq"]
    unknown = set(recipes) - set(RECIPES)
    if unknown:
        raise click.BadParameter(f"unknown recipe(s) {sorted(unknown)}; known: {list(RECIPES)}", param_hint="--recipe")
    path = run_int8(fp32_files, int8_files, list(recipes) or list(RECIPES), list(_ints(batches)), threads or usable_cpus(),
                    repeats, CALIBRATION, calibration_images, work, out)
    click.echo(f"int8: {path}", err=True)
    click.echo(report.render(out))


@main.command("pipeline")
@click.option("--models", default="resnet50,simplecnn", show_default=True, help="Bundled models (or .onnx files) to measure.")
@click.option("--batches", default="1,8,32", show_default=True)
@click.option("--threads", type=click.IntRange(1), default=2, show_default=True, help="Cores for the pipeline and the bare session alike.")
@click.option("--repeats", type=click.IntRange(1), default=5, show_default=True)
@click.option("--images", type=click.IntRange(1), default=32, show_default=True, help="Images of the folder to run on.")
@click.option("--folder", type=click.Choice(("cxr3-external", "originals")), default="cxr3-external", show_default=True,
              help="cxr3-external: 224-320 px JPEGs; originals: 500-2059 px JPEG/PNG/WebP (results-pipeline-originals.json).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=HERE, show_default=True)
def pipeline_command(models, batches, threads, repeats, images, folder, out) -> None:
    """Measurement 5: cxr-infer's folder pipeline with --explain against the bare session (new
    defaults and old settings interleaved), per-step costs, threads against processes; writes
    results-pipeline.json and RESULTS.md."""
    from benchmarks.folder import run_pipeline

    path = run_pipeline(models.split(","), list(_ints(batches)), threads, repeats, images, out, folder)
    click.echo(f"pipeline: {path}", err=True)
    click.echo(report.render(out))


@main.command("decode-agreement")
@click.option("--models", default="resnet50,simplecnn", show_default=True, help="Bundled models (or .onnx files).")
@click.option("--limit", type=click.IntRange(1), help="Only the first N files of each folder (a smoke run).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=HERE, show_default=True)
def decode_agreement_command(models, limit, out) -> None:
    """Full against reduced JPEG decoding on cxr3-external (and the originals): top-1 agreement
    and the largest probability change per model; writes results-decode.json and RESULTS.md."""
    from benchmarks.decode import run_decode_agreement

    click.echo(f"decode-agreement: {run_decode_agreement(models.split(','), out, limit)}", err=True)
    click.echo(report.render(out))


@main.command("report-page")
@click.option("--model", default="resnet50", show_default=True, help="Bundled model name or .onnx file.")
@click.option("--images", type=click.IntRange(1), default=1000, show_default=True, help="Real radiographs (cxr3-external, then cxr3-internal/test).")
@click.option("--batch", type=click.IntRange(1), default=16, show_default=True)
@click.option("--threads", type=click.IntRange(1), default=2, show_default=True)
@click.option("--repeats", type=click.IntRange(1), default=2, show_default=True, help="Interleaved runs with and without the report.")
@click.option("--loads", type=click.IntRange(1), default=5, show_default=True, help="Page loads in headless chromium.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=HERE, show_default=True)
def report_page_command(model, images, batch, threads, repeats, loads, out) -> None:
    """cxr-infer --report: its cost on a run of IMAGES inputs and its page's load time in headless
    chromium; writes results-report-page.json and RESULTS.md."""
    from benchmarks.report_page import run_report_page

    click.echo(f"report-page: {run_report_page(model, images, batch, threads, repeats, loads, out)}", err=True)
    click.echo(report.render(out))


@main.command("scale-out")
@click.option("--model", default="resnet50", show_default=True, help="Bundled model (or .onnx file).")
@click.option("--images", type=click.IntRange(2), default=240, show_default=True, help="Radiographs of cxr3-external per run.")
@click.option("--threads", type=click.IntRange(1), default=2, show_default=True, help="Cores: the plain run's --threads and the local Ray's CPUs.")
@click.option("--batch-size", type=click.IntRange(1), default=16, show_default=True)
@click.option("--repeats", type=click.IntRange(1), default=2, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=HERE, show_default=True)
def scale_out_command(model, images, threads, batch_size, repeats, out) -> None:
    """cxr-infer --engine ray on a local Ray against the plain command: images/s end to end and
    once running; writes results-scale-out.json (needs the [ray] extra)."""
    from benchmarks.scale_out import run_scale_out, table

    path = run_scale_out(model, images, threads, batch_size, repeats, out)
    click.echo(f"scale-out: {path}", err=True)
    click.echo(table(path))


@main.command("report")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=HERE, show_default=True)
def report_command(out) -> None:
    """Regenerate RESULTS.md and the plots from the JSON results in OUT."""
    click.echo(report.render(out))


if __name__ == "__main__":
    main()
