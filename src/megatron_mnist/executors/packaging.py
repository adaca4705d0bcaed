"""How the package's code reaches a job: :class:`SourcePackager`, shared by the executors that stage files."""

import subprocess
from dataclasses import dataclass
from pathlib import Path

import nemo_run as run

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # src/megatron_mnist


def describe_source() -> str:
    """Which code a job runs: the git commit and whether the working tree differs from it (NVIDIA-NeMo/Run#40)."""
    repo = PACKAGE_DIR.parent.parent

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        dirty = bool(git("status", "--porcelain", "--", "src", "recipes", "launch.py").strip())
    except (OSError, subprocess.CalledProcessError):
        from megatron_mnist import __version__

        return f"megatron_mnist {__version__} from {PACKAGE_DIR} (not a git checkout)"
    return f"megatron_mnist at {commit}{' + uncommitted changes' if dirty else ''} ({PACKAGE_DIR})"


@dataclass(kw_only=True)
class SourcePackager(run.PatternPackager):
    """Ships ``megatron_mnist`` as it is on disk — the working tree, not the last commit — and writes
    ``SOURCE.txt`` (commit + dirty flag) beside the job's code. Unpacked into the job's ``code/`` folder, which is
    the job's working directory (so a relative ``log.log_dir`` lands inside the job directory)."""

    include_pattern: str | list[str] = str(PACKAGE_DIR)
    relative_path: str | list[str] = str(PACKAGE_DIR.parent)

    def package(self, path: Path, job_dir: str, name: str) -> str:
        Path(job_dir, "SOURCE.txt").write_text(describe_source() + "\n")
        return super().package(path, job_dir, name)
