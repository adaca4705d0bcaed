"""Reading a run's CSV logs (``RUN_DIR/csv_logs/version_N/metrics.csv``; a resumed run adds a version)."""

import csv
from pathlib import Path


def rows(metrics_csv: Path, column: str) -> list[tuple[int, float]]:
    """(step, value) rows of ``column`` in one CSV log."""
    with open(metrics_csv) as f:
        # the step column is an integer on CPU runs; on GPU runs NeMo logs `step` itself, a float ("4.0")
        return [(int(float(r["step"])), float(r[column])) for r in csv.DictReader(f) if r.get(column)]


def versions(run_dir: Path) -> list[Path]:
    return sorted(Path(run_dir).glob("csv_logs/version_*/metrics.csv"), key=lambda p: int(p.parent.name[8:]))


def logged(run_dir: Path, column: str) -> list[tuple[int, float]]:
    """(step, value) rows of ``column`` over the run's CSV versions merged into one history: one row per step.

    A resumed run (a later version) restarts at its checkpoint: the rows an earlier version logged from that step on
    were lost work, and the resumed run's replace them. A validation at a step before that point keeps its first
    value (Lightning validates again at the step it resumes from, on a fresh validation shuffle).
    """
    merged: dict[int, float] = {}
    for path in versions(run_dir):
        new = rows(path, column)
        trained = rows(path, "train_loss")
        start = trained[0][0] if trained else (new[0][0] if new else None)
        if start is None:
            continue
        merged = {step: value for step, value in merged.items() if step < start}
        for step, value in new:
            merged.setdefault(step, value)
    return sorted(merged.items())


def compare(run_a: Path, run_b: Path, column: str = "train_loss") -> tuple[bool, str]:
    """Whether two runs logged the same ``column`` at the same steps, and a one-line account."""
    a, b = dict(logged(run_a, column)), dict(logged(run_b, column))
    if not a or not b:
        missing = run_a if not a else run_b
        return False, f"no {column} logged in {missing}/csv_logs"
    common = sorted(a.keys() & b.keys())
    diffs = [(step, abs(a[step] - b[step])) for step in common if a[step] != b[step]]
    only = sorted(a.keys() ^ b.keys())
    elsewhere = f"; {len(only)} steps logged by one run only (first: {only[0]})" if only else ""
    if not diffs:
        if only:
            return False, f"the {len(common)} common steps of {column} are identical{elsewhere}"
        return True, f"identical: {len(common)} steps of {column}, bit for bit"
    worst = max(diffs, key=lambda d: d[1])
    return False, (
        f"different: {len(diffs)} of {len(common)} common steps of {column} differ, first at step "
        f"{diffs[0][0]}, largest |a-b| = {worst[1]:.3g} at step {worst[0]}{elsewhere}"
    )
