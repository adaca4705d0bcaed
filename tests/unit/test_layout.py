"""The two rooms: what runs where the user types (``launcher/``, ``executors/``, ``recipes/``) imports none of the
training stack; what runs on the node lives in ``job/``. Checked in a fresh interpreter (what is imported is the
point), with NeMo-Run imported as the launcher imports it (``launcher/lean_nemo_run.py``)."""

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import megatron_mnist
import recipes

HEAVY = ("torch", "lightning", "nemo.lightning", "megatron", "megatron.core", "nemo.collections")
SRC = Path(megatron_mnist.__file__).parent


def modules_of(package: str, folder: Path) -> list[str]:
    return [package] + [f"{package}.{m.name}" for m in pkgutil.iter_modules([str(folder)])]


def test_the_user_side_imports_no_training_stack():
    user_side = [
        *modules_of("megatron_mnist.launcher", SRC / "launcher"),
        *modules_of("megatron_mnist.executors", SRC / "executors"),
        *modules_of("recipes", Path(recipes.__file__).parent),
        "megatron_mnist.model.spec",
        "megatron_mnist.checkpoint_paths",
        "megatron_mnist.names",
    ]
    program = (
        "import json, sys\n"
        "from megatron_mnist.launcher.lean_nemo_run import import_nemo_run\n"
        "import_nemo_run()\n"
        f"for name in {user_side!r}:\n"
        "    __import__(name)\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.splitlines()[-1]) == []
    assert len(user_side) > 20  # the walk found the modules


def test_the_job_side_is_where_the_training_stack_is():
    # a module that imports the stack at its top belongs in job/ (or model/, data/): listed here so a move is seen
    job = {m.name for m in pkgutil.iter_modules([str(SRC / "job")])}
    assert {"api", "builders", "engines", "lightning_engine", "strategies", "lightning", "megatron_optim", "checkpoint",
            "preemption"} <= job  # fmt: skip
    top = {m.name for m in pkgutil.iter_modules([str(SRC)])}
    assert top == {
        "checkpoint_paths", "errors", "job_protocol", "names", "report", "run_dirs", "run_logs", "run_record",  # both
        "data", "model", "job", "launcher", "executors",
    }  # fmt: skip


def test_the_executor_kinds_import_nothing_of_the_launcher_above_them():
    """The launcher submits through the executor kinds; a kind that imported the launcher back (as two did, for one
    error class) would make the two one import loop."""
    import ast

    folder = Path(megatron_mnist.__file__).parent / "executors"
    upward = []
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            names += [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            upward += [f"{path.name}: {n}" for n in names if n.startswith("megatron_mnist.launcher")]
    assert not upward
    assert len(list(folder.glob("*.py"))) > 3  # the walk saw the kinds' modules
