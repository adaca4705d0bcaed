#!/usr/bin/env python
"""megatron-mnist launcher: NeMo-Run's CLI over this package's recipes.

    python launch.py pretrain trainer.max_steps=50 --dryrun      # show the config and the command, run nothing
    python launch.py pretrain --yes                              # train on the embedded sample, local executor
    python launch.py finetune model.initial_ckpt_path=runs/pretrain --yes
    python launch.py predict model.initial_ckpt_path=runs/finetune --yes
    python launch.py pipeline --yes                              # pretrain -> finetune -> predict

Overrides are NeMo-Run's dotted syntax on the recipe (``data.micro_batch_size=32``, ``optim.lr=3e-4``); the
recipe factory's own arguments go through ``--factory "pretrain(max_steps=50, name='try2')"``.
Use the long options: NeMo-Run binds ``-y`` both to
``--yaml`` and to ``--yes``.

Nothing here imports the training stack (torch's NeMo / Megatron side): that happens in the job.
"""

import sys
from pathlib import Path

import fiddle as fdl
import nemo_run as run
import typer
from nemo_run.cli.api import Entrypoint, RunContext
from nemo_run.cli.cli_parser import parse_cli_args
from rich.console import Console
from torchx.specs import AppState

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `recipes` beside this file, also from another cwd

from megatron_mnist import executors  # noqa: E402  (also registers executor=local etc. for the CLI)
from megatron_mnist.api import predict, train  # noqa: E402
from recipes.finetune import finetune  # noqa: E402
from recipes.pipeline import pipeline as pipeline_stages  # noqa: E402
from recipes.predict import predict as predict_recipe  # noqa: E402
from recipes.pretrain import pretrain  # noqa: E402

console = Console()
LOG_TAIL_LINES = 40


def run_stages(title: str, stages: dict[str, run.Partial], executor, direct: bool = False) -> int:
    """Run the stages in order as one NeMo-Run experiment; 0 when every task succeeded, else 1.

    ``run.run`` returns None even when the job failed (NVIDIA-NeMo/Run#289): read each task's state and show the
    log tail of a failed one.
    """
    if direct or executor is None:
        for name, task in stages.items():
            console.print(f"[bold cyan]Running {name} in this process[/bold cyan]")
            fdl.build(task)()
        return 0
    with run.Experiment(title, executor=executor) as exp:
        for name, task in stages.items():
            exp.add(task, name=name)
        exp.run(sequential=True, tail_logs=False)
    # Leaving the `with` waits for the last jobs; Job.state then holds what they ended with (asking the local
    # scheduler afterwards can answer RUNNING or UNKNOWN).
    results = {job.id: (job.state, Path(job.executor.job_dir)) for job in exp.jobs}
    console.print(f"experiment {exp._id}: {exp._exp_dir}")
    failed = [name for name, (state, _) in results.items() if state != AppState.SUCCEEDED]
    for name, (state, job_dir) in results.items():
        console.print(f"{name}: {state.name}  job dir: {job_dir}")
    for name in failed:
        show_log_tail(name, results[name][1])
    return 1 if failed else 0


def show_log_tail(name: str, job_dir: Path) -> None:
    # Slurm writes log-*.out; the local scheduler stderr.log / stdout.log under nemo_run/APP/ROLE/RANK/
    patterns = ("**/log*.out", "**/stderr.log", "**/stdout.log")
    logs = [p for pattern in patterns for p in job_dir.glob(pattern) if p.stat().st_size] if job_dir.is_dir() else []
    if not logs:
        console.print(f"[bold red]{name} failed; no log found under {job_dir}[/bold red]")
        return
    log = logs[0]
    lines = log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
    console.print(f"[bold red]{name} failed; last {len(lines)} lines of {log}:[/bold red]")
    print("\n".join(lines))


def dryrun(title: str, stages: dict[str, run.Partial], executor) -> None:
    """What would run: each stage's resolved config, then the exact command the executor would start."""
    for task in stages.values():
        run.dryrun_fn(task, executor=executor)
    if executor is not None:
        with run.Experiment(title, executor=executor) as exp:
            for name, task in stages.items():
                exp.add(task, name=name)
            exp.dryrun()


class LaunchContext(RunContext):
    """NeMo-Run's run context with a launch that reports failures (exit status 1 and the log tail)."""

    def _execute_task(self, fn, task_args):
        task = self.parse_fn(fn, task_args)
        if any([self.to_yaml, self.to_toml, self.to_json]):
            from nemo_run.cli.api import _serialize_configuration

            _serialize_configuration(task, self.to_yaml, self.to_toml, self.to_json, console=console, verbose=True)
            return
        stages = {self.name: task}
        if self.dryrun:
            dryrun(self.name, stages, self.executor)
            return
        run.dryrun_fn(task, executor=self.executor)
        if not self._should_continue(self.skip_confirmation):
            return
        sys.exit(run_stages(self.name, stages, self.executor, direct=self.direct))


DEFAULT_EXECUTOR = executors.local()
RECIPES = [
    ("pretrain", train, pretrain, "Pretrain the autoencoder (MSE)."),
    ("finetune", train, finetune, "Finetune a pretrained trunk as a digit classifier."),
    ("predict", predict, predict_recipe, "Predict the held-out digits; writes predictions.pt and metrics.json."),
]

app = typer.Typer(
    help=__doc__.split("\n\n")[0] + "\n\nRecipes: pretrain, finetune, predict; pipeline runs all three. "
    "`python launch.py RECIPE --help` lists a recipe's options; `--dryrun` shows its full config.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
for _name, _fn, _factory, _help in RECIPES:
    Entrypoint(
        _fn,
        namespace="megatron_mnist",
        name=_name,
        default_factory=_factory,
        default_executor=DEFAULT_EXECUTOR,
        help_str=_help + "\n\n" + _factory.__doc__,
        run_ctx_cls=LaunchContext,
    )._add_command(app, is_main=True)  # is_main: skip loading NeMo's own
    # CLI entry points, which import nemo.collections.llm (~10 s) just to build this command line


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def pipeline(
    ctx: typer.Context,
    name: str = typer.Option("pipeline", help="folder under --log-dir for the three runs"),
    log_dir: str = typer.Option("runs", help="where run folders go"),
    accelerator: str = typer.Option("auto", help="auto, gpu or cpu"),
    max_steps: int = typer.Option(500, help="optimizer steps of pretrain and of finetune"),
    dryrun_: bool = typer.Option(False, "--dryrun", help="print the configs and commands; run nothing"),
    direct: bool = typer.Option(False, "--direct", help="run in this process instead of the local executor"),
    yes: bool = typer.Option(False, "--yes", help="do not ask before launching"),
):
    """Run pretrain -> finetune -> predict as one experiment on the local executor.

    Extra arguments override a stage's recipe: `pretrain.trainer.max_steps=50 finetune.optim.lr=3e-4`.
    """
    stages = pipeline_stages(name=name, log_dir=log_dir, accelerator=accelerator, max_steps=max_steps)
    for override in ctx.args:
        stage, _, rest = override.partition(".")
        if stage not in stages or not rest:
            raise typer.BadParameter(f"{override!r}: expected STAGE.KEY=VALUE with STAGE one of {', '.join(stages)}")
        parse_cli_args(stages[stage], [rest], stages[stage])
    executor = fdl.build(executors.local())
    if dryrun_:
        dryrun(name, stages, executor)
        return
    if not yes and not typer.confirm("Launch the pipeline?"):
        return
    sys.exit(run_stages(name, stages, None if direct else executor, direct=direct))


if __name__ == "__main__":
    app()
