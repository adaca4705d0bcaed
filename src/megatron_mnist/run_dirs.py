"""One live run per run directory.

Re-running a name continues its run (resume-if-exists); two runs of one name at the same time must not write into
one folder. A run holds an exclusive lock on ``LOG_DIR/.NAME.lock`` (beside its folder: NeMo's logger moves loose
files inside an existing run folder away) while it lives (released by the kernel when the
process ends, however it ends); a run that finds the folder locked by another process takes the next free
``name-N``.
"""

import fcntl
import os
from pathlib import Path

_held: dict[Path, int] = {}  # run dirs this process has claimed -> their lock's descriptor, open while it lives


def claim_run_dir(log_dir: str, name: str) -> str:
    for n in range(1, 1000):
        run_dir = (Path(log_dir) / (name if n == 1 else f"{name}-{n}")).resolve()
        if run_dir in _held:  # a later stage of this same process continues its own run
            return str(run_dir)
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(run_dir.parent / f".{run_dir.name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        _held[run_dir] = fd
        if n > 1:
            print(f"{Path(log_dir) / name} is in use by a running job: this run writes {run_dir}")
        return str(run_dir)
    raise RuntimeError(f"no free run directory for {name!r} in {log_dir}")
