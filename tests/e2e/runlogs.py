"""Reading the CSV logs a run wrote."""

import csv
from pathlib import Path


def logged(run_dir: Path, column: str) -> list[tuple[int, float]]:
    """(step, value) rows of ``column`` over all of the run's CSV versions (a resumed run adds a version)."""
    return [row for path in sorted(Path(run_dir).glob("csv_logs/version_*/metrics.csv")) for row in rows(path, column)]


def rows(metrics_csv: Path, column: str) -> list[tuple[int, float]]:
    """(step, value) rows of ``column`` in one CSV log."""
    with open(metrics_csv) as f:
        return [(int(r["step"]), float(r[column])) for r in csv.DictReader(f) if r.get(column)]


def mean(values):
    return sum(values) / len(values)
