"""One live run per run directory.

Re-running a name continues its run (resume-if-exists); two runs of one name at the same time must not write into
one folder. A run holds an exclusive lock on ``LOG_DIR/.NAME.lock`` (beside its folder: NeMo's logger moves loose
files inside an existing run folder away) while it lives (released by the kernel when the
process ends, however it ends); a run that finds the folder locked by another process takes the first ``name-N``
that does not exist yet — never another run's folder (a finished ``name-2`` would be resumed, and its checkpoints
tidied away, by a run that asked for ``name``).

A run of several ranks is one run: its rank 0 claims the folder and writes the launch's key (what torchrun or srun
gave every rank of this launch alike) into the lock file; the other ranks take the folder whose held lock carries
their key. This is decided before any process group exists, so the ranks meet through the file system (shared by
the nodes of a cluster as the run folder must be anyway).
"""

import fcntl
import os
import time
from pathlib import Path

_held: dict[Path, int] = {}  # run dirs this process has claimed -> their lock's descriptor, open while it lives
_asked: dict[Path, Path] = {}  # run dirs taken as NAME-N -> the NAME folder that a live run held
LAUNCH_VARS = ("TORCHELASTIC_RUN_ID", "MASTER_ADDR", "MASTER_PORT", "SLURM_JOB_ID", "SLURM_STEP_ID",
               "SLURM_RESTART_COUNT")  # fmt: skip


def launch_key(env=os.environ) -> str:
    return ";".join(f"{var}={env.get(var, '')}" for var in LAUNCH_VARS)


def _candidates(log_dir: str, name: str):
    for n in range(1, 1000):
        yield n, (Path(log_dir) / (name if n == 1 else f"{name}-{n}")).resolve()


def global_rank(env=os.environ) -> int:
    """This process's rank among the launch's (torchrun's RANK, srun's SLURM_PROCID), 0 for a plain process."""
    return int(env.get("RANK", env.get("SLURM_PROCID", "0")))


def claim_run_dir(log_dir: str, name: str, wait_s: float = 300) -> str:
    if global_rank() != 0:
        return _follow_rank_zero(log_dir, name, wait_s)
    for n, run_dir in _candidates(log_dir, name):
        if run_dir in _held:  # a later stage of this same process continues its own run
            return str(run_dir)
        if n > 1 and run_dir.exists():  # another run's folder (live or finished): not ours to write into
            continue
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(run_dir.parent / f".{run_dir.name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.pwrite(fd, launch_key().encode(), 0)
        _held[run_dir] = fd
        if n > 1:
            _asked[run_dir] = (Path(log_dir) / name).resolve()
            print(f"{Path(log_dir) / name} is in use by a running job: this run writes {run_dir}")
        return str(run_dir)
    raise RuntimeError(f"no free run directory for {name!r} in {log_dir}")


def _follow_rank_zero(log_dir: str, name: str, wait_s: float) -> str:
    """The folder rank 0 of this launch holds: its lock is taken and carries this launch's key."""
    key, deadline = launch_key(), time.monotonic() + wait_s
    while time.monotonic() < deadline:
        for _, run_dir in _candidates(log_dir, name):
            lock = run_dir.parent / f".{run_dir.name}.lock"
            if not lock.exists():
                break
            if lock.read_text() == key and _is_locked(lock):
                return str(run_dir)
        time.sleep(0.2)
    raise RuntimeError(f"rank 0 did not claim a run directory for {name!r} in {log_dir} within {wait_s:.0f} s")


def held_by_a_live_run(run_dir: str | Path) -> bool:
    """Whether a running job holds ``run_dir`` (its lock beside it is taken): a run started now of the same name
    would write ``NAME-N`` instead, a run of its own. Read by the launcher before it submits (a local, Docker or
    shared-file-system Slurm job's lock is visible there)."""
    lock = Path(run_dir).parent / f".{Path(run_dir).name}.lock"
    return lock.exists() and _is_locked(lock)


def _is_locked(lock: Path) -> bool:
    fd = os.open(lock, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the probe's own lock, if it got one
    return False


def renamed_from(run_dir: str | Path) -> str | None:
    """The folder this process asked for when a live run held it and ``run_dir`` (``NAME-N``) was taken instead."""
    asked = _asked.get(Path(run_dir).resolve())
    return str(asked) if asked else None
