"""What a run folder says about the run in it, so that running a name again is judged before anything trains.

Running the same ``log.name`` again continues that run from its last complete checkpoint — where that can train:
the run must be below ``max_steps``, and trained by the same engine, on the same kind of hardware, in the same
precision and with the same batch sizes (a checkpoint of another kind cannot continue exactly). The job writes
``RUN_DIR/record/run.json`` (these facts; in a folder, as NeMo's logger moves a run folder's loose files into
``run_N/`` at every start) when it starts; the launcher checks a run folder it can see before submitting,
and the job checks again before it trains (a cluster's folder, a recipe composed in Python). Torch-free: both rooms
use it.
"""

import json
import re
from pathlib import Path

from megatron_mnist.checkpoint_paths import last_checkpoint
from megatron_mnist.errors import RunError

RECORD = Path("record", "run.json")
# what must not change when a run continues, with the override that sets each
SAME_ON_RESUME = {
    "engine": "trainer.loop",
    "accelerator": "trainer.accelerator",
    "precision": "trainer.precision",
    "micro_batch_size": "data.micro_batch_size",
    "global_batch_size": "data.global_batch_size",
}
_STEP = re.compile(r"step=(\d+)")


def read(run_dir: str | Path) -> dict:
    try:
        return json.loads((Path(run_dir) / RECORD).read_text())
    except (OSError, ValueError):
        return {}


def write(run_dir: str | Path, facts: dict) -> None:
    path = Path(run_dir) / RECORD
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(facts, indent=2, sort_keys=True) + "\n")


def checkpoint_step(checkpoint: Path) -> int | None:
    """The step in a checkpoint's name (``step=40-val_loss=0.0512-last``), as both engines name them."""
    found = _STEP.search(checkpoint.parent.name if checkpoint.name == "weights" else checkpoint.name)
    return int(found[1]) if found else None


def check_continuation(run_dir: str | Path, facts: dict, max_steps: int, resume_if_exists: bool) -> int | None:
    """The step the run continues from (None: it starts afresh); :class:`RunError` where it cannot continue."""
    run_dir = Path(run_dir)
    last = last_checkpoint(run_dir) if run_dir.is_dir() else None
    if last is None:
        return None
    step = checkpoint_step(last)
    if not resume_if_exists:
        raise RunError(
            f"resume.resume_if_exists=false but {run_dir} holds a run (its last checkpoint is at step {step}): "
            "a fresh run never writes over another, so give it a new log.name"
        )
    if step is not None and step >= max_steps:
        raise RunError(
            f"{run_dir} has already trained {step} steps and trainer.max_steps={max_steps}: nothing to continue; "
            f"raise trainer.max_steps above {step} to continue it, or use a new log.name for a new run"
        )
    recorded = read(run_dir)
    for key, override in SAME_ON_RESUME.items():
        if key in recorded and key in facts and recorded[key] != facts[key]:
            raise RunError(
                f"{run_dir} was trained with {override}={recorded[key]} and this run asks {facts[key]}: a run "
                f"continues only as it started; use a new log.name (or {override}={recorded[key]})"
            )
    return step
