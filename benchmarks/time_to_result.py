"""Time to result on this machine: the README's pipeline with its stages as separate jobs and in one job, under each
engine, a single short pretrain, and the report — wall-clock of the whole command as a user types it, interleaved
round robin, min / median / max. Also what a job imports before its first step (``-X importtime`` of the modules a
training job loads).

    python benchmarks/time_to_result.py --rounds 3
"""

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def commands(out: Path, round_: int, baseline: Path | None) -> dict[str, list[str]]:
    launch = [sys.executable, str(ROOT / "launch.py")]
    before, after = {}, {}
    if baseline is not None:  # the same commands from another checkout (its src/ first on the path: see main)
        old = [sys.executable, str(baseline / "launch.py")]
        before = {
            "pipeline, baseline checkout": [*old, "pipeline", "--log-dir", f"{out}/base{round_}", "--yes"],
            "pretrain, 20 steps, baseline checkout": [*old, "pretrain", "trainer.max_steps=20",
                                                      f"log.log_dir={out}/basepre{round_}", "--yes"],
        }  # fmt: skip
        after = {"report of a pipeline, baseline checkout": [*old, "report", f"{out}/one0/pipeline", "--out",
                                                             f"{out}/basereport{round_}"]}  # fmt: skip
    return {
        **before,
        "pipeline, separate jobs (lightning)": [*launch, "pipeline", "--separate-jobs", "--log-dir",
                                                f"{out}/sep{round_}", "--yes"],
        "pipeline, one job (lightning)": [*launch, "pipeline", "--log-dir", f"{out}/one{round_}", "--yes"],
        "pipeline, one job (megatron)": [*launch, "pipeline", "--loop", "megatron", "--log-dir", f"{out}/meg{round_}",
                                         "--yes"],
        "pretrain, 20 steps": [*launch, "pretrain", "trainer.max_steps=20", f"log.log_dir={out}/pre{round_}", "--yes"],
        "pretrain, 20 steps (megatron)": [*launch, "pretrain", "trainer.max_steps=20", "trainer.loop=megatron",
                                          f"log.log_dir={out}/mpre{round_}", "--yes"],
        "report of a pipeline": [*launch, "report", f"{out}/one0/pipeline", "--out", f"{out}/report{round_}"],
        **after,  # the report of the same pipeline (written by this checkout in the first round)
    }  # fmt: skip


def import_breakdown() -> list[tuple[str, float]]:
    """Cumulative import seconds of the heavy packages a training job loads (one fresh process)."""
    code = "import megatron_mnist.job.api, megatron_mnist.model.config, megatron_mnist.data.datamodule, " \
           "megatron_mnist.job.lightning_engine, megatron_mnist.job.megatron_engine"  # fmt: skip
    err = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True).stderr
    found = {}
    for line in err.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \|(\s*)(\S+)", line)
        if m and m.group(3) in ("torch", "lightning", "torchmetrics", "torchvision", "megatron.core", "nemo.lightning",
                                "nemo.collections.common", "matplotlib", "megatron_mnist.job.api"):  # fmt: skip
            found[m.group(3)] = max(found.get(m.group(3), 0), int(m.group(1)) / 1e6)
    total = subprocess.run([sys.executable, "-c", f"import time; t = time.time(); {code}; print(time.time() - t)"],
                           capture_output=True, text=True).stdout.strip()  # fmt: skip
    return [*sorted(found.items(), key=lambda kv: -kv[1]), ("all of a training job's imports", float(total))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="", help="a substring of the command names to run")
    parser.add_argument("--baseline", type=Path, help="another checkout (e.g. a git worktree of an older commit)")
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="time-to-result-"))
    times: dict[str, list[float]] = {}
    try:
        for round_ in range(args.rounds):
            for name, command in commands(out, round_, args.baseline).items():
                if args.only not in name:
                    continue
                env = dict(os.environ)
                if "baseline" in name:
                    env["PYTHONPATH"] = f"{args.baseline / 'src'}:{args.baseline}"
                start = time.monotonic()
                result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env)
                took = time.monotonic() - start
                if result.returncode != 0:
                    sys.exit(f"{name} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
                times.setdefault(name, []).append(took)
                print(f"round {round_ + 1}: {name}: {took:.1f} s", flush=True)
        print("\ncommand | min | median | max (s)")
        for name, values in times.items():
            print(f"{name} | {min(values):.1f} | {statistics.median(values):.1f} | {max(values):.1f}")
        print("\nwhat a training job imports (cumulative s, one process)")
        for name, seconds in import_breakdown():
            print(f"{name} | {seconds:.1f}")
    finally:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
