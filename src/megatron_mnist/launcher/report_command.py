"""``launch.py report``: a command that reads run folders only, so it starts without NeMo-Run, the recipes and the
executors (``entry`` runs it before importing ``cli``, ~1 s less on a 2-core machine); ``cli`` lists it with the
rest."""

from pathlib import Path

import typer

from megatron_mnist.launcher.console import console, fail


def report(
    run_dir: Path,
    out: Path = typer.Option(None, help="where the pictures and index.html go (default: RUN_DIR/report)"),
):
    """Pictures of runs and an index.html: loss curves, digits and reconstructions, the 3-d embedding, the confusion
    matrix. RUN_DIR is a run folder or a folder of runs (e.g. runs/pipeline)."""
    from megatron_mnist.report import write_report

    try:
        index = write_report(run_dir, out)
    except FileNotFoundError as e:
        fail(str(e))
    console.print(f"report: {index}", highlight=False, soft_wrap=True)


def run(argv: list[str]) -> None:
    """``report ARGS...`` as ``launch.py`` was given it; the process ends once the report is written, without
    Python's teardown of torch and matplotlib (``fast_exit``: 0.65 s of a 2.9 s report on a 2-core machine)."""
    from megatron_mnist.fast_exit import run_then_exit

    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(report)
    run_then_exit(lambda: typer.main.get_command(app).main(args=argv[1:], prog_name="launch.py report"))
