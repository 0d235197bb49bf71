"""Evaluation reports: per-image CSV, summary JSON and a Markdown table whose header states the protocol.

Non-finite numbers (PSNR of identical images) are written as the strings "inf", "-inf", "nan" in JSON and CSV:
standard JSON has no infinity, and `float("inf")` reads the string back. Every file is written atomically
(a temporary file in the same folder, then renamed), so an interrupted run never leaves half a report.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from d3sr.atomic_files import write_atomically
from d3sr.evaluation.folders import Evaluation
from d3sr.evaluation.suite import METRICS


def write_atomic(path: str | Path, text: str) -> Path:
    """Write `text` to `path` atomically (UTF-8, newlines as given); returns the path."""
    return write_atomically(path, lambda temporary: temporary.write_text(text, encoding="utf-8", newline=""))


def json_number(value):
    """`value` with non-finite floats as 'inf' / '-inf' / 'nan' strings (JSON has no infinity)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: json_number(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_number(v) for v in value]
    return value


def format_number(name: str, value: float | None) -> str:
    """A metric value as printed in tables: PSNR 2 decimals, NIQE 3, MUSIQ 2, FID 2, the rest 4 (the paper's)."""
    if value is None:
        return "–"
    if not math.isfinite(value):
        return "inf" if value > 0 else ("-inf" if value < 0 else "nan")
    decimals = {"psnr": 2, "niqe": 3, "musiq": 2, "fid": 2}.get(name, 4)
    return f"{value:.{decimals}f}"


def csv_text(evaluation: Evaluation) -> str:
    """Per-image rows as CSV (one column per metric, full precision)."""
    rows = evaluation.rows
    columns = list(rows[0]) if rows else ["image"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (json_number(v) if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()


def summary(evaluation: Evaluation, paper: dict[str, float] | None = None, extra: dict | None = None) -> dict:
    """The summary JSON object: means, protocol, notes, and the paper's row when compared."""
    result = {"means": evaluation.means, "protocol": evaluation.protocol, "notes": evaluation.notes}
    if paper is not None:
        result["paper"] = {k: v for k, v in paper.items() if k in evaluation.means}
    result.update(extra or {})
    return json_number(result)


def markdown(evaluation: Evaluation, label: str, paper: dict[str, float] | None = None, paper_label: str = "") -> str:
    """A Markdown report: the protocol as a header, then one table row for `label` (and the paper's row)."""
    p = evaluation.protocol
    names = list(evaluation.means)
    lines = [f"# Evaluation: {p.get('test_set') or label}", ""]
    lines.append(f"- Images: {p['images_evaluated']}, {'whole images' if p['images'] == 'whole' else 'crops'}")
    lines.append(f"- PSNR/SSIM computed on: {p['color']}; crop border: {p['crop_border']} px")
    lines.append(
        f"- SR/HR size mismatch: {'error' if p['align'] == 'error' else 'cropped to the common top-left region'}"
    )
    lines.append(f"- pyiqa {p['pyiqa']}, torch {p['torch']}")
    lines.append("- Metric variants:")
    lines += [f"  - {METRICS[n].label}: {v}" for n, v in p["metrics"].items()]
    for note in evaluation.notes:
        lines.append(f"- Note: {note}")
    lines.append("")
    header = [f"{METRICS[n].label} {'↓' if METRICS[n].lower_better else '↑'}" for n in names]
    lines.append("| method | " + " | ".join(header) + " |")
    lines.append("|---|" + "---|" * len(names))
    lines.append(f"| {label} | " + " | ".join(format_number(n, evaluation.means[n]) for n in names) + " |")
    if paper is not None:
        lines.append(f"| {paper_label} | " + " | ".join(format_number(n, paper.get(n)) for n in names) + " |")
    return "\n".join(lines) + "\n"


def write_reports(
    evaluation: Evaluation,
    output: str | Path,
    label: str,
    paper: dict[str, float] | None = None,
    paper_label: str = "",
    extra: dict | None = None,
) -> dict[str, Path]:
    """Write per_image.csv, summary.json and results.md into `output`; returns their paths."""
    output = Path(output)
    return {
        "csv": write_atomic(output / "per_image.csv", csv_text(evaluation)),
        "json": write_atomic(
            output / "summary.json", json.dumps(summary(evaluation, paper, extra), indent=2, ensure_ascii=False) + "\n"
        ),
        "markdown": write_atomic(output / "results.md", markdown(evaluation, label, paper, paper_label)),
    }
