"""Renders ``RESULTS.md`` and the throughput plots from the ``results-<part>.json`` files.

The Markdown is generated, never edited by hand: a reader can trust that every figure in it
came from the JSON beside it, whose command and machine are stated at the top.
"""

from __future__ import annotations

import json
from importlib import import_module
from pathlib import Path
from typing import Any

from benchmarks.harness import PARTS
from benchmarks.throughput import ORT

TITLES = {
    "onnx_vs_torch": "1. ONNX Runtime fp32 vs PyTorch eager",
    "explain_cost": "2. explain outputs vs logits only",
    "gradcam": "3. eager Grad-CAM vs our explain",
    "gradcam_all": "3b. eager Grad-CAM of every class vs our explain",
    "int8_speed": "4. int8 vs fp32 speed",
    "pipeline_vs_bare": "5. folder pipeline vs bare session",
    "gflops": "6. achieved GFLOP/s vs matmul peak",
}
GFLOPS_TARGET = 0.9


def load(out: Path) -> dict[str, dict[str, Any]]:
    return {part: json.loads(p.read_text()) for part in PARTS if (p := out / f"results-{part}.json").exists()}


def table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows] + [""]


def spread(s: dict[str, float], digits: int = 2) -> str:
    """``median [q1-q3]``: the middle half of the repeats lies in the brackets."""
    return f"{s['median']:.{digits}f} [{s['q1']:.{digits}f}-{s['q3']:.{digits}f}]"


def met(row: dict[str, Any]) -> bool | None:
    """Whether a comparison's median meets its target (``None``: no target for this model)."""
    if row.get("target") is None:
        return None
    return row["ratio"]["median"] >= row["target"] if row["at_least"] else row["ratio"]["median"] <= row["target"]


def ratio_rows(comparisons: list[dict[str, Any]]) -> tuple[list[int], list[list[Any]]]:
    """One row per measurement and model, one column per batch size, and the verdict."""
    batches = sorted({c["batch"] for c in comparisons})
    groups: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for c in comparisons:
        groups.setdefault((c["comparison"], c["model"]), {})[c["batch"]] = c
    rows = []
    for (name, model), by_batch in groups.items():
        first = next(iter(by_batch.values()))
        verdicts = [met(c) for c in by_batch.values()]
        target = "-" if first.get("target") is None else f"{'>=' if first['at_least'] else '<='} {first['target']}"
        if verdicts[0] is None:
            verdict = "-"
        else:
            verdict = "met" if all(verdicts) else "**missed** at some batch sizes" if any(verdicts) else "**missed**"
        rows.append([TITLES[name], model, first["meaning"],
                     *(spread(by_batch[b]["ratio"]) if b in by_batch else "-" for b in batches), target, verdict])
    return batches, rows


def machine_section(result: dict[str, Any]) -> list[str]:
    m = result["machine"]
    cpu = m["cpu"]
    flags = ", ".join(cpu["flags"]) or "none recorded"
    absent = [f for f in ("avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f not in cpu["flags"]]
    gpus = ", ".join(f"{g['name']} ({g['memory']}, driver {g['driver']})" for g in m["gpus"]) or "none"
    return [
        f"- CPU: {cpu['model']}, {cpu['usable_cpus']} usable of {cpu['logical_cpus']} logical CPUs; "
        f"flags: {flags}" + (f" (absent: {', '.join(absent)})" if absent else ""),
        f"- GPU: {gpus}",
        f"- OS: {m['os']}; threads given to onnxruntime and torch alike: {result['config']['threads']}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
        f"- load average (1/5/15 min) before: {result['load_before']}, after: {result['load_after']}",
        "",
    ]


def header_section(result: dict[str, Any]) -> list[str]:
    models = "; ".join(f"{arch}: {d['source']} ({'trained' if d['trained'] else 'random init'})"
                       for arch, d in result["models"].items()) or "none"
    c = result["config"]
    return [
        f"Generated {result['generated_at']} by `{result['command']}`.",
        f"Models: {models}. Batches {c['batches']}, {c['repeats']} interleaved repeats per variant.",
        "",
    ]


def cpu_section(result: dict[str, Any]) -> list[str]:
    lines = ["## CPU", ""] + header_section(result) + machine_section(result)
    lines += [f"- not measured: {s['model']}: {s['reason']}" for s in result.get("skipped", [])]
    lines += ["### Ratios against the targets", "",
              "Each ratio is taken per repeat between interleaved runs, then summarized: median [IQR].", ""]
    batches, rows = ratio_rows(result["comparisons"] + gflops_comparisons(result))
    lines += table(["measurement", "model", "ratio", *(f"batch {b}" for b in batches), "target", "verdict"], rows)
    variants = sorted({v for r in result["throughput"] for v in r["img_s"]}, key=_variant_order(result))
    lines += accuracy_section(result)
    lines += ["### Throughput (images/s, median [IQR])", ""]
    lines += table(["model", "batch", *variants], [
        [r["model"], r["batch"], *(spread(r["img_s"][v], 1) if v in r["img_s"] else "-" for v in variants)]
        for r in result["throughput"]
    ])
    peak = result["peak_gflops"]
    lines += ["### 6. Achieved GFLOP/s against the measured matmul peak", "",
              f"Peak: float32 matmul {peak['size']}x{peak['size']}, " + ", ".join(
                  f"{lib} {spread(s, 1)} GFLOP/s" for lib, s in peak["by_library"].items()) +
              f"; the best median, {peak['best']:.1f} GFLOP/s, is the yardstick (target: >= 0.9 of it).", ""]
    lines += table(["model", "batch", "variant", "GFLOP/image", "GFLOP/s (median)", "fraction of peak"], [
        [g["model"], g["batch"], g["variant"], f"{g['gflop_per_image']:.2f}", f"{g['gflops']:.1f}",
         spread(g["fraction_of_peak"])] for g in result["gflops"]
    ])
    lines += ["### Where onnxruntime spends the time (profiler, batch 8)", "",
              "Shares within a row are the evidence; the variants are profiled one after another, not "
              "interleaved, so their milliseconds compare only on an idle machine.", ""]
    lines += table(["model", "variant", "ms per run", "share of node time by operator"], [
        [arch, variant, f"{p['ms_per_run']:.1f}", ", ".join(f"{op} {share:.0%}" for op, share in p["shares"].items())]
        for arch, by_variant in result["profiles"].items() for variant, p in by_variant.items()
    ])
    return lines


def gflops_comparisons(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Measurement 6 as ratio rows: ORT fp32 GFLOP/s over the matmul peak (one value per batch)."""
    return [{
        "comparison": "gflops", "model": g["model"], "batch": g["batch"], "meaning": "ORT fp32 GFLOP/s / matmul peak",
        "ratio": g["fraction_of_peak"],
        "target": GFLOPS_TARGET, "at_least": True,
    } for g in result["gflops"] if g["variant"] == ORT]


def _variant_order(result: dict[str, Any]):
    first = list(result["throughput"][0]["img_s"]) if result["throughput"] else []
    return lambda v: (first.index(v) if v in first else len(first), v)


def accuracy_section(result: dict[str, Any]) -> list[str]:
    """int8 against fp32 image by image, as the quantizer measured it when it wrote the file."""
    lines = ["### 4. int8 vs fp32 answers", ""]
    return lines + table(["model", "weights", "compared on", "images", "top-1 agreement", "max |p int8 - p fp32|",
                          "macro-F1 fp32", "macro-F1 int8", "target"], [
        [r["model"], "trained" if r["trained"] else "random init (agreement not meaningful)",
         Path(r.get("folder", "?")).name, r.get("images", "-"), f"{r['top1_agreement']:.4f}",
         f"{r['max_prob_diff']:.4f}", f"{r['fp32_macro_f1']:.4f}", f"{r['int8_macro_f1']:.4f}",
         "met (>= 0.99)" if r["top1_agreement"] >= 0.99 else "**missed** (>= 0.99)"]
        for r in result["int8_accuracy"] if "top1_agreement" in r
    ])


def gpu_section(result: dict[str, Any]) -> list[str]:
    lines = ["## 7. GPU", ""]
    if not result["throughput"]:
        reasons = "; ".join(s["reason"] for s in result["skipped"])
        return lines + [f"Skipped on this host ({result['generated_at']}): {reasons}. "
                        "On a CUDA host run `python -m benchmarks run --part gpu`.", ""]
    lines += header_section(result) + machine_section(result)
    variants = sorted({v for r in result["throughput"] for v in r["img_s"]})
    lines += ["Milliseconds per batch (median), with images/s in brackets. Host-device copies are included, except in "
              "the 'IO binding, on device' and bare TensorRT columns (input and outputs stay in GPU memory).", ""]
    lines += table(["model", "batch", *variants], [
        [r["model"], r["batch"], *(f"{1000 * r['batch'] / r['img_s'][v]['median']:.2f} ({r['img_s'][v]['median']:.0f})"
                                   if v in r["img_s"] else "-" for v in variants)]
        for r in result["throughput"]
    ])
    return lines + [f"- not measured: {s.get('model', '')} {s.get('variant', '')}: {s['reason']}" for s in result["skipped"]] + [""]


def plot(results: dict[str, dict[str, Any]], out: Path) -> list[str]:
    """Images/s against batch size, one panel per model, for each part with throughput rows."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return ["(plot not drawn: matplotlib is not installed)", ""]
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    lines = []
    for part in PARTS:
        result = results.get(part, {})
        groups = [("-", result.get("throughput", [])), ("--", result.get("pipeline", []))]  # dashed: measurement 5
        archs = sorted({r["model"] for _, rows in groups for r in rows})
        if not archs:
            continue
        fig, axes = plt.subplots(1, len(archs), figsize=(6.5 * len(archs), 4.8), squeeze=False)
        for ax, arch in zip(axes[0], archs):
            for style, rows in groups:
                series: dict[str, list[tuple[int, float]]] = {}
                for r in (r for r in rows if r["model"] == arch):
                    for variant, s in r["img_s"].items():
                        series.setdefault(variant, []).append((r["batch"], s["median"]))
                for variant, points in series.items():
                    points.sort()
                    ax.plot([b for b, _ in points], [v for _, v in points], style, marker="o", label=variant)
            batches = sorted({r["batch"] for _, rows in groups for r in rows})
            ax.set(xscale="log", yscale="log", xlabel="batch size", ylabel="images/s (median)", title=f"{arch} ({part})")
            ax.set_xticks(batches)
            ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            for axis in (ax.xaxis, ax.yaxis):
                axis.set_major_formatter(ScalarFormatter())
                axis.set_minor_formatter(NullFormatter())
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
        name = f"throughput-{part}.png"
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        lines += [f"![images/s against batch size ({part})]({name})", ""]
    return lines


def render(out: Path) -> Path:
    """Write ``out/RESULTS.md`` (and plots) from whatever parts have results."""
    results = load(out)
    if not results and not any(out.glob("results-*.json")):
        raise FileNotFoundError(f"{out}: no results-*.json; run `python -m benchmarks run` first")
    lines = ["# Benchmark results", "",
             "Generated by `python -m benchmarks` from the `results-*.json` files beside this page; "
             "do not edit by hand. Ratios say more than absolute times on a shared CPU.", ""]
    lines += plot(results, out)
    sections = {"cpu": cpu_section, "gpu": gpu_section}
    for part in PARTS:
        if part in results:
            lines += sections[part](results[part])
    for pattern, module, section in (("pipeline*", "folder", "pipeline_section"), ("decode", "decode", "decode_section")):
        for extra in sorted(out.glob(f"results-{pattern}.json")):  # python -m benchmarks pipeline / decode-agreement
            lines += getattr(import_module(f"benchmarks.{module}"), section)(json.loads(extra.read_text()))
    if (gate_results := out / "results-gate.json").exists():  # python -m benchmarks gate
        from benchmarks.gate import gate_section

        lines += gate_section(json.loads(gate_results.read_text()))
    if (int8_results := out / "results-int8.json").exists():  # python -m benchmarks int8
        from benchmarks.int8 import int8_section

        lines += int8_section(json.loads(int8_results.read_text()))
    if (page_results := out / "results-report-page.json").exists():  # python -m benchmarks report-page
        from benchmarks.report_page import report_page_section

        lines += report_page_section(json.loads(page_results.read_text()))
    path = out / "RESULTS.md"
    path.write_text("\n".join(lines).rstrip() + "\n")
    return path
