"""The result file every training run leaves in its output folder (`result.json`), which sweep reports read.

{'status': 'completed', 'metrics': {...}, 'checkpoint': path, 'iterations': n, 'output_dir': path} for a run that
finished, {'status': 'failed', 'error': 'Type: message'} for one that raised; a folder without the file holds a run
that is still going or was killed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from d3sr.atomic_files import write_atomically

RESULT_FILE = "result.json"


def write_run_result(output_dir: str | Path, result: dict[str, Any]) -> Path:
    """Write `result` (JSON-serialisable) to output_dir/result.json atomically; returns the path."""
    text = json.dumps(result, indent=2, default=str) + "\n"
    return write_atomically(Path(output_dir) / RESULT_FILE, lambda path: path.write_text(text))


def read_run_result(output_dir: str | Path) -> dict[str, Any] | None:
    """The result a run wrote to output_dir, or None if it wrote none (still running, or killed)."""
    path = Path(output_dir) / RESULT_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        return {"status": "failed", "error": f"unreadable {RESULT_FILE}: {error}"}
