"""The two rooms: what runs where the user types (``launcher/``, ``executors/``, ``recipes/``) imports none of the
training stack; what runs on the node lives in ``job/``. Checked in a fresh interpreter (what is imported is the
point), with NeMo-Run imported as the launcher imports it (``lean_nemo_run.py``)."""

import json
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import megatron_mnist
import megatron_mnist_recipes

HEAVY = ("torch", "lightning", "nemo.lightning", "megatron", "megatron.core", "nemo.collections")
SRC = Path(megatron_mnist.__file__).parent


def modules_of(package: str, folder: Path) -> list[str]:
    return [package] + [f"{package}.{m.name}" for m in pkgutil.iter_modules([str(folder)])]


def test_the_user_side_imports_no_training_stack():
    user_side = [
        *modules_of("megatron_mnist.launcher", SRC / "launcher"),
        *modules_of("megatron_mnist.executors", SRC / "executors"),
        *modules_of("megatron_mnist_recipes", Path(megatron_mnist_recipes.__file__).parent),
        "megatron_mnist.model.spec",
        "megatron_mnist.checkpoint_paths",
        "megatron_mnist.names",
        "megatron_mnist.defaults",
        "megatron_mnist.constraints",
        "megatron_mnist.lean_nemo_run",
    ]
    program = (
        "import json, sys\n"
        "from megatron_mnist.lean_nemo_run import import_nemo_run\n"
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
        "checkpoint_paths", "constraints", "defaults", "errors", "job_protocol", "names", "report", "run_dirs",  # both
        "run_logs", "run_record", "lean_nemo_run", "fast_exit",
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


def import_graph() -> dict[str, set[str]]:
    """Module → the package's modules it imports, at the top or inside a function (a loop closed by a function's
    import still ties the two modules together). ``from package import name`` is an edge to the submodule when
    ``name`` is one, else to the package (its ``__init__``)."""
    import ast

    modules = {}
    for path in SRC.rglob("*.py"):
        parts = ("megatron_mnist", *path.relative_to(SRC).with_suffix("").parts)
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path

    def known(name: str) -> str:
        while name not in modules and "." in name:
            name = name.rsplit(".", 1)[0]
        return name if name in modules else ""

    graph = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                           for a in node.names]  # fmt: skip
            else:
                continue
            graph[name] |= {t for target in targets if (t := known(target)) and t != name}
    return graph


def test_the_installed_packages_are_every_package_folder_and_the_recipes_under_a_name_of_their_own():
    """pyproject.toml lists the packages one by one (the recipes map from ``recipes/`` to ``megatron_mnist_recipes``,
    which setuptools' package finder cannot name): a new package folder left out of the list would not install."""
    import tomllib

    settings = tomllib.loads((SRC.parents[1] / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {".".join(p.parent.relative_to(SRC.parent).parts) for p in SRC.rglob("__init__.py")}
    assert set(settings["packages"]) == folders | {"megatron_mnist_recipes"}
    assert settings["package-dir"] == {"": "src", "megatron_mnist_recipes": "recipes"}
    assert Path(megatron_mnist_recipes.__file__).parent == SRC.parents[1] / "recipes"


def test_the_import_graph_has_no_loops_but_the_submit_facade():
    """The package imports downwards only; the one arrow up is ``megatron_mnist.submit`` (the root package's lazy
    facade over the launcher's submission). Before: the executor kinds imported the launcher for an error class,
    and ``executors.fields`` its own registry."""
    graph = import_graph()
    graph["megatron_mnist"].discard("megatron_mnist.launcher.submission")  # the facade, imported on first use
    loops, done = [], set()

    def walk(name: str, path: list[str]) -> None:  # depth first; a module met again on the path closes a loop
        if name in path:
            loops.append(path[path.index(name) :] + [name])
            return
        if name in done:
            return
        for target in sorted(graph[name]):
            walk(target, [*path, name])
        done.add(name)

    for name in sorted(graph):
        walk(name, [])
    assert not loops, " | ".join(" -> ".join(loop) for loop in loops[:5])
    assert len(graph) > 50 and sum(map(len, graph.values())) > 100  # the walk saw the package


def test_every_default_is_stated_once_in_defaults():
    """A function's default for one of the package's settings is read from ``megatron_mnist.defaults``, never
    written as the same literal again (before: ``micro_batch_size=64`` in four places, ``log_dir="runs"`` in eight,
    some of which never took effect)."""
    import ast

    from megatron_mnist import defaults

    settings = {"max_steps": "MAX_STEPS", "lr": "LEARNING_RATE", "val_check_interval": "VAL_CHECK_INTERVAL",
                "micro_batch_size": "MICRO_BATCH_SIZE", "hidden_size": "HIDDEN_SIZE", "log_dir": "LOG_DIR",
                "seed": "SEED"}  # fmt: skip
    restated, read = [], 0
    for path in [*SRC.rglob("*.py"), *Path(megatron_mnist_recipes.__file__).parent.rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, (ast.FunctionDef, ast.AnnAssign)):
                continue
            if isinstance(node, ast.AnnAssign):  # a dataclass field: `hidden_size: int = 64`
                pairs = [(node.target, node.value)] if isinstance(node.target, ast.Name) and node.value else []
                pairs = [(t.id, v) for t, v in pairs]
            else:
                args = node.args.args + node.args.kwonlyargs
                given = [None] * (len(node.args.args) - len(node.args.defaults)) + node.args.defaults
                pairs = [(a.arg, d) for a, d in zip(args, given + node.args.kw_defaults, strict=True) if d is not None]
            for name, value in pairs:
                if (
                    name in settings
                    and isinstance(value, ast.Constant)
                    and value.value == getattr(defaults, settings[name])
                ):
                    restated.append(f"{path.relative_to(SRC.parent.parent)}:{value.lineno} {name}={value.value!r}")
                read += name in settings and ast.unparse(value).startswith("defaults.")
    assert restated == [], "defaults written again instead of read from megatron_mnist.defaults"
    assert read >= 12  # the walk found the builders', the recipes', the data module's and the model config's
    assert defaults.MICRO_BATCH_SIZE == 64 and defaults.HIDDEN_SIZE == 64  # the seed tutorial's


def test_the_readme_layout_names_every_module():
    """The README's Layout section is a newcomer's map: each module of the package and of the recipes is named there."""
    readme = (SRC.parents[1] / "README.md").read_text()
    layout = readme[readme.index("## Layout") : readme.index("**Adding an executor kind**")]
    recipes_folder = Path(megatron_mnist_recipes.__file__).parent
    modules = [p for p in [*SRC.rglob("*.py"), *recipes_folder.glob("*.py")] if p.name != "__init__.py"]
    missing = [str(p) for p in modules if not re.search(rf"\b{re.escape(p.stem)}\b", layout)]
    assert not missing, f"not in the README's Layout: {missing}"
    assert len(modules) >= 50  # the walk found the package
