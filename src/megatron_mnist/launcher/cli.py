"""megatron-mnist launcher: NeMo-Run's CLI over this package's recipes.

    python launch.py pretrain trainer.max_steps=50 --dryrun      # show the config and the command, run nothing
    python launch.py pretrain --yes                              # train on the embedded sample, local executor
    python launch.py finetune model.initial_ckpt_path=runs/pretrain --yes
    python launch.py predict model.initial_ckpt_path=runs/finetune --yes
    python launch.py pipeline --yes                              # pretrain -> finetune -> predict
    python launch.py pretrain executor=slurm executor.partition=debug --yes --detach
    python launch.py status EXPERIMENT_ID                        # also: list, logs, cancel
    python launch.py report runs/pipeline                        # pictures and index.html of the runs
    python launch.py pretrain --sweep optim.lr=1e-3,1e-4 data.micro_batch_size=32,64 --yes   # 4 tasks, a table
    python launch.py check finetune executor=slurm executor.partition=debug   # every pre-submit check, no submit

Overrides are NeMo-Run's dotted syntax on the recipe (``data.micro_batch_size=32``, ``optim.lr=3e-4``) and on the
executor (``executor=docker executor.num_gpus=1``); the recipe factory's own arguments go through
``--factory "pretrain(max_steps=50, name='try2')"``. Use the long options: NeMo-Run binds ``-y`` both to
``--yaml`` and to ``--yes``.

Nothing here imports the training stack (NeMo's Lightning side, Megatron): that happens in the job.
"""

import difflib
import inspect
import itertools
import logging
import re
import sys
from pathlib import Path

# NeMo-Run's argument parser logs each error before raising it, with its context dicts: we print the one line
logging.getLogger("nemo_run.cli.cli_parser").setLevel(logging.CRITICAL)
import fiddle as fdl  # noqa: E402

from megatron_mnist.lean_nemo_run import import_nemo_run  # noqa: E402

run = import_nemo_run()  # before anything else imports it: without torch and the Lepton client (a second saved)
import typer  # noqa: E402
from nemo_run.cli.api import Entrypoint, RunContext, RunContextError  # noqa: E402
from nemo_run.cli.cli_parser import CLIException, parse_cli_args  # noqa: E402

from megatron_mnist import defaults, executors  # noqa: E402  (executors registers executor=local|...)
from megatron_mnist.errors import InputError  # noqa: E402
from megatron_mnist.executors.fields import CONTROL, SHELL_BY_DESIGN  # noqa: E402
from megatron_mnist.job import engines  # noqa: E402
from megatron_mnist.job.api import predict, train  # noqa: E402
from megatron_mnist.launcher import experiments, moved_modules, nemo_run_private, report_command  # noqa: E402
from megatron_mnist.launcher.config_files import ConfigFileError, load_recipe  # noqa: E402
from megatron_mnist.launcher.console import console, fail  # noqa: E402
from megatron_mnist.launcher.recipe_checks import RecipeError, check_overrides  # noqa: E402
from megatron_mnist.launcher.submission import (  # noqa: E402
    SubmissionError,
    check_submission,
    dryrun,
    executor_shape,
    in_one_job,
    run_stages,
)
from megatron_mnist.launcher.sweep import split_sweep, sweep_table  # noqa: E402
from megatron_mnist.names import check_name  # noqa: E402
from megatron_mnist_recipes.finetune import finetune  # noqa: E402
from megatron_mnist_recipes.pipeline import pipeline as pipeline_stages  # noqa: E402
from megatron_mnist_recipes.predict import predict as predict_recipe  # noqa: E402
from megatron_mnist_recipes.pretrain import pretrain  # noqa: E402

moved_modules.install()  # experiments and YAML files saved before the launcher/job split name the old modules
nemo_run_private.scan_scheduler_entry_points_once()


def parse_error(e: Exception, args: list[str] = (), prefix: str = "") -> str:
    """One line from a NeMo-Run parser error: they wrap the cause in messages that repeat it with their context
    dicts (``Error processing argument ... (Argument: ..., Context: {...})``); the innermost cause says it once. The
    argument it is about, where ``args`` holds it (NeMo-Run's outer message says ``as KEY=VALUE:``), goes first."""
    named = next((a for a in args if f" as {a}:" in str(e)), None)
    while e.__cause__ is not None:
        e = e.__cause__
    line = str(e).splitlines()[0].split(" (Argument: ")[0] if str(e) else type(e).__name__
    return f"{prefix}{named}: {line}" if named else line


def check_submission_or_exit(name: str, executor, stages: dict[str, run.Partial], skip_checks: bool = False,
                             detach: bool = False) -> None:  # fmt: skip
    """``submission.check_submission`` (as ``megatron_mnist.submit`` checks): the first problem is one line and exit
    status 2, nothing created."""
    try:
        check_submission(name, executor, stages, skip_checks=skip_checks, detach=detach)
    except SubmissionError as e:
        fail(str(e))


def announce(stages: dict[str, run.Partial], executor) -> None:
    """One short line per task before it is submitted (the whole config and script: --dryrun)."""
    ranks = executor_shape(executor)
    for name, task in stages.items():
        log = getattr(task, "log", None)
        where = f"run folder {Path(log.log_dir) / log.name}" if log is not None else ""
        console.print(
            f"{name}: {task.__fn_or_cls__.__name__} on {type(executor).__name__} "
            f"({ranks[0] * ranks[1]} rank(s)), {where}  (--dryrun shows the full config and submission)",
            highlight=False,
            soft_wrap=True,
        )


def confirmed(yes: bool, ask) -> bool:
    """--yes, or the user's answer to ``ask()``; without a terminal to ask on, one line and exit 2 (before: NeMo-Run's
    prompt read nothing and said "Unexpected error", exit 1)."""
    if yes:
        return True
    if not sys.stdin.isatty():
        fail("no terminal to ask on whether to submit: pass --yes (or --dryrun to see what would be submitted)")
    return ask()


def exit_status(results: dict, detached: bool = False) -> int:
    """0 when every task succeeded (or, with --detach, was submitted), else 1: a task that was waited for and is
    still SUBMITTED never ran (seen with NEMORUN_HOME's disk full)."""
    ok = ("SUCCEEDED", "SUBMITTED") if detached else ("SUCCEEDED",)
    return 0 if all(r.state in ok for r in results.values()) else 1


class LaunchContext(RunContext):
    """NeMo-Run's run context, with checks before submitting and a launch that reports failures."""

    def cli_execute(self, fn, args, entrypoint_type="task"):
        # NeMo-Run 0.11 takes the executor as `run.executor=...` and rejects every key that merely starts with "run"
        # (NVIDIA-NeMo/Run#604). Take `executor=`/`executor.*`/`run.*` exactly; everything else is the recipe's.
        args, self.sweep_axes = split_sweep(args)
        # --skip-checks: submit without the checks (`launch.py check` runs them alone), e.g. when the data or a
        # checkpoint only exists where the job runs
        self.skip_checks = "--skip-checks" in args
        args = [a for a in args if a != "--skip-checks"]
        try:
            check_name(self.name, "--name")
        except InputError as e:
            fail(str(e))
        run_args, task_args = [], []
        for arg in args:
            if arg.startswith("run."):
                run_args.append(arg[len("run.") :])
            elif arg.startswith(("executor=", "executor.", "plugins=", "plugins.")):
                run_args.append(arg)
            else:
                task_args.append(arg)
        if any(a.startswith("executor.") for a in run_args) and not any(a.startswith("executor=") for a in run_args):
            run_args.insert(0, "executor=local")  # settings for the default executor
        try:
            self.parse_args(run_args)
        except (RunContextError, ValueError, TypeError, AttributeError, CLIException) as e:  # NeMo-Run's parser's too
            fail(parse_error(e))
        self._execute_task(fn, task_args)

    def parse_executor(self, name: str, *args: str):
        """``executor=NAME``: one of this package's factories. ``executor.KEY=VALUE`` sets the factory's argument
        KEY where it has one (``image``, ``python_env``, ``tunnel`` ...), else the executor's field
        (``partition``, ``time``, ``env_vars`` ...)."""
        factory = executors.FACTORIES.get(name)
        if factory is None:
            fail(f"executor={name!r} is not one of {', '.join(executors.FACTORIES)}")
        for arg in args:  # NeMo-Run's parser answers both with "Invalid argument format", naming neither
            key, _, value = arg.partition("=")
            if not value.strip():
                fail(f"executor.{key}= has no value: give one, e.g. executor.{key}=VALUE")
            if CONTROL.search(value) and key not in SHELL_BY_DESIGN:
                fail(f"executor.{key}={value!r} holds a control character: a value is one line")
        params = inspect.signature(factory).parameters
        key = {a: re.split(r"[.=\[+*/-]", a, maxsplit=1)[0] for a in args}
        own = [a for a in args if key[a] in params]
        try:
            factory_config = parse_cli_args(run.Partial(factory), own)
            executor_config = fdl.build(factory_config)()
        except Exception as e:  # the factory's own ValueErrors, NeMo-Run's parser errors
            fail(parse_error(e, own, "executor."))
        fields = set(inspect.signature(executor_config.__fn_or_cls__).parameters)
        for arg in args:
            if arg not in own and key[arg] not in fields:
                known = sorted(set(params) | fields)
                near = difflib.get_close_matches(key[arg], known, n=1)
                hint = f"did you mean executor.{near[0]}?" if near else f"settings: {', '.join(params)}"
                fail(f"unknown executor setting executor.{key[arg]} for executor={name}: {hint}")
        fields_args = [a for a in args if a not in own]
        try:
            return parse_cli_args(executor_config, fields_args)
        except Exception as e:
            fail(parse_error(e, fields_args, "executor."))

    recipe_factory = None  # set per command below: the recipe whose keys the overrides must name
    check_only = False  # `launch.py check`: run every check a submission runs, then stop
    skip_checks = False  # `--skip-checks`: submit without them
    sweep_axes: list = []  # `--sweep KEY=V1,V2 ...`: one task per combination

    def parse_fn(self, fn, args, **kwargs):
        """The recipe: the command's factory with the overrides, or, with ``--yaml FILE``, the recipe in FILE (as
        ``--to-yaml``/``--to-toml``/``--to-json`` wrote it) with the overrides on top."""
        if not self.yaml:
            return super().parse_fn(fn, args, **kwargs)
        try:
            task = load_recipe(self.yaml, fn)
        except ConfigFileError as e:
            fail(str(e))
        return parse_cli_args(task, args) if args else task

    def keys_recipe(self, fn):
        """What the overrides' keys are checked against: the file's recipe with ``--yaml`` (its keys, not the
        factory's), else the command's factory's. Composed once per command, a sweep's combinations included."""
        if not self.yaml:
            return self.recipe_factory()
        try:
            return load_recipe(self.yaml, fn)
        except ConfigFileError as e:
            fail(str(e))

    def _execute_task(self, fn, task_args):
        keys_recipe = self.keys_recipe(fn)
        try:
            check_overrides(keys_recipe, [a for a in task_args if "=" in a])
        except RecipeError as e:
            fail(str(e))
        if self.sweep_axes:
            return self._execute_sweep(fn, task_args, keys_recipe)
        try:
            task = self.parse_fn(fn, task_args)
        except (ValueError, TypeError, AttributeError, CLIException) as e:  # NeMo-Run's parser errors
            fail(parse_error(e, task_args))
        if any([self.to_yaml, self.to_toml, self.to_json]):
            nemo_run_private.serialize_configuration(
                task, self.to_yaml, self.to_toml, self.to_json, console=console, verbose=True
            )
            return
        stages = {self.name: task}
        check_submission_or_exit(self.name, self.executor, stages, skip_checks=self.skip_checks and not self.check_only,
                                 detach=self.detach)  # fmt: skip
        if self.check_only:
            executor = type(self.executor).__name__
            console.print(f"check: {self.name} on {executor}: ok — nothing submitted", highlight=False)
            return
        if self.dryrun:
            dryrun(self.name, stages, self.executor)
            return
        announce(stages, self.executor)
        if not confirmed(self.skip_confirmation, lambda: nemo_run_private.should_continue(self, False)):
            return
        results = run_stages(
            self.name, stages, self.executor, direct=self.direct, detach=self.detach, tail_logs=self.tail_logs
        )
        sys.exit(exit_status(results, self.detach))

    def _execute_sweep(self, fn, task_args, keys_recipe):
        """One task per combination of the axes' values, run side by side as one experiment; then a table of the
        final val losses (also written as CSV beside the runs)."""
        keys = [key for key, _ in self.sweep_axes]
        combos = list(itertools.product(*(values for _, values in self.sweep_axes)))
        try:
            for combo in combos:
                check_overrides(keys_recipe, [f"{k}={v}" for k, v in zip(keys, combo, strict=True)])
        except RecipeError as e:
            fail(f"--sweep: {e}")
        given = dict(a.split("=", 1) for a in task_args if a.startswith("log.log_dir="))
        out = Path(pipeline_output_dir(given.get("log.log_dir", defaults.LOG_DIR), self.executor)) / self.name
        if (out / "checkpoints").is_dir() or (out / "csv_logs").is_dir():
            fail(f"--sweep: {out} is a run's folder, and a sweep's runs go in a folder of their own: give the sweep "
                 f"a --name (e.g. --name {self.name}-sweep)")  # fmt: skip
        stages = {}
        for index, combo in enumerate(combos):
            name = f"{self.name}-{index}"
            extra = [f"{k}={v}" for k, v in zip(keys, combo, strict=True)]
            try:
                stages[name] = self.parse_fn(fn, [*task_args, *extra, f"log.log_dir={out}", f"log.name={name}"])
            except (ValueError, TypeError, AttributeError, CLIException) as e:
                fail(f"--sweep: {parse_error(e)}")
        check_submission_or_exit(self.name, self.executor, stages, skip_checks=self.skip_checks, detach=self.detach)
        if self.dryrun:
            dryrun(self.name, stages, self.executor)
            return
        console.print(f"sweep {self.name}: {len(stages)} tasks over {', '.join(keys)}; runs in {out}")
        if not confirmed(self.skip_confirmation, lambda: nemo_run_private.should_continue(self, False)):
            return
        results = run_stages(self.name, stages, self.executor, direct=self.direct, detach=self.detach, sequential=False)
        if not self.detach:
            sweep_table(out, keys, dict(zip(stages, combos, strict=True)))
        sys.exit(exit_status(results, self.detach))


def executor_and_overrides(args: list[str]):
    """``executor=NAME executor.key=value ...`` from the pipeline's extra arguments (default: local), built; the
    rest of the arguments (the stages' overrides)."""
    name, executor_args, rest = nemo_run_private.parse_prefixed_args(args, "executor")
    try:
        config = LaunchContext(name="pipeline").parse_executor(name or "local", *executor_args)
    except (RunContextError, ValueError) as e:
        fail(str(e).splitlines()[0])
    return fdl.build(config), rest


DEFAULT_EXECUTOR = executors.local()
RECIPES = [
    ("pretrain", train, pretrain, "Pretrain the autoencoder (MSE)."),
    ("finetune", train, finetune, "Finetune a pretrained trunk as a digit classifier."),
    ("predict", predict, predict_recipe, "Predict the held-out digits; writes predictions.pt and metrics.json."),
]

app = typer.Typer(
    help=__doc__.split("\n\n")[0] + "\n\nRecipes: pretrain, finetune, predict; pipeline runs all three; list, "
    "status, logs and cancel manage experiments; check runs a submission's checks; report draws runs. "
    "`python launch.py RECIPE --help` lists a recipe's options; "
    "`--dryrun` shows its full config and what would be submitted.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
for _name, _fn, _factory, _help in RECIPES:
    _entrypoint = Entrypoint(
        _fn,
        namespace="megatron_mnist",
        name=_name,
        default_factory=_factory,
        default_executor=DEFAULT_EXECUTOR,
        help_str=_help + "\n\n" + _factory.__doc__,
        run_ctx_cls=type(f"{_name.title()}Context", (LaunchContext,), {"recipe_factory": staticmethod(_factory)}),
    )
    nemo_run_private.add_command(_entrypoint, app)


def pipeline_output_dir(log_dir: str, executor) -> str:
    """One folder all stages can reach, so finetune finds pretrain's checkpoint wherever the jobs run."""
    return executors.kind_of(executor).shared_dir(log_dir, executor)  # (Docker: check_submission_or_exit mounts it)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def pipeline(
    ctx: typer.Context,
    name: str = typer.Option("pipeline", help="folder under --log-dir for the three runs; the experiment's title"),
    log_dir: str = typer.Option(defaults.LOG_DIR, help="where run folders go"),
    accelerator: str = typer.Option("auto", help="auto, gpu or cpu"),
    max_steps: int = typer.Option(defaults.MAX_STEPS, help="optimizer steps of pretrain and of finetune"),
    loop: str = typer.Option(
        engines.DEFAULT, help=f"the training engine of every stage: {' or '.join(engines.ENGINES)}"
    ),
    dryrun_: bool = typer.Option(False, "--dryrun", help="print the configs and what would be submitted"),
    direct: bool = typer.Option(False, "--direct", help="run in this process instead of through an executor"),
    detach: bool = typer.Option(False, "--detach", help="submit and return (Slurm: the stages are dependent jobs)"),
    one_job: bool = typer.Option(
        None,
        "--one-job/--separate-jobs",
        help="the stages one after the other in one job, its start-up paid once (default on executor=local), or "
        "each stage a job of its own (the default elsewhere; on Slurm, jobs with afterok dependencies)",
    ),  # fmt: skip
    yes: bool = typer.Option(False, "--yes", help="do not ask before launching"),
):
    """Run pretrain -> finetune -> predict as one experiment, on any executor.

    Extra arguments choose the executor (`executor=slurm executor.partition=debug`) and override a stage's
    recipe (`pretrain.trainer.max_steps=50 finetune.optim.lr=3e-4`). On this machine the three stages run in one
    job (one process: Python, torch and NeMo start once); on Slurm `--one-job` runs them in one allocation (one
    queue wait instead of three).
    """
    try:
        check_name(name, "--name")
    except InputError as e:
        fail(str(e))
    if loop not in engines.ENGINES:
        fail(f"--loop={loop!r} is not one of {', '.join(engines.ENGINES)}")
    executor, overrides = executor_and_overrides(ctx.args)
    stages = pipeline_stages(
        name=name, log_dir=pipeline_output_dir(log_dir, executor), accelerator=accelerator, max_steps=max_steps,
        loop=loop,
    )  # fmt: skip
    for override in overrides:
        stage, _, rest = override.partition(".")
        if stage not in stages or not rest:
            fail(f"{override!r}: expected STAGE.KEY=VALUE with STAGE one of {', '.join(stages)}, or executor=...")
        try:
            check_overrides(stages[stage], [rest])
            parse_cli_args(stages[stage], [rest], stages[stage])
        except Exception as e:
            fail(f"{stage}: {e}" if isinstance(e, RecipeError) else parse_error(e))
    check_submission_or_exit(name, executor, stages, skip_checks=direct, detach=detach)
    if one_job is None:
        one_job = executor is not None and executors.kind_of(executor).pipeline_in_one_job
    one_job = one_job and not direct  # --direct: the stages run in this process anyway
    if dryrun_:
        dryrun(name, {name: in_one_job(stages)} if one_job else stages, executor)
        return
    announce(stages, executor)
    if one_job:
        console.print(f"{name}: the stages run in order in one job (--separate-jobs: a job each)", highlight=False)
    if not confirmed(yes, lambda: typer.confirm("Launch the pipeline?")):
        return
    results = run_stages(name, stages, executor, direct=direct, detach=detach, one_job=one_job)
    sys.exit(exit_status(results, detach))


app.command("list")(experiments.list_experiments)  # following experiments up: launcher/experiments.py
for command in (experiments.status, experiments.watch, experiments.logs, experiments.cancel):
    app.command()(command)


@app.command("compare")
def compare_runs(run_a: Path, run_b: Path, column: str = typer.Option("train_loss", help="the CSV column")):
    """Compare two run directories' per-step metric (e.g. the same recipe and seed on two executors).

    Exit status 0 when they logged the same values at the same steps, bit for bit; 1 otherwise.
    """
    from megatron_mnist.run_logs import compare

    same, account = compare(run_a, run_b, column)
    console.print(account, highlight=False)
    sys.exit(0 if same else 1)


@app.command("check", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def check(
    ctx: typer.Context,
    recipe: str = typer.Argument(..., help="pretrain, finetune or predict"),
    factory: str = typer.Option(None, "--factory", help="the recipe factory's call, as for the recipe commands"),
    name: str = typer.Option(None, "--name", help="the job / experiment name, as for the recipe commands"),
    yaml: str = typer.Option(None, "--yaml", help="a recipe file (--to-yaml/--to-toml/--to-json) to check"),
):
    """Run the checks every submission runs, and submit nothing: override keys and types, sizes and batch
    divisibility, data and checkpoint paths, GPUs, the executor (Slurm partition, its GPUs and time limit; Docker
    image; SSH host). Takes the recipe's overrides, executor=... settings, --name and --yaml. Exit 0 when all
    pass; else one line naming the problem and exit 2."""
    commands = {name: (fn, recipe_factory) for name, fn, recipe_factory, _ in RECIPES}
    if recipe not in commands:
        fail(f"check: unknown recipe {recipe!r} (expected one of {', '.join(commands)})")
    fn, recipe_factory = commands[recipe]
    context_cls = type("CheckContext", (LaunchContext,), {"recipe_factory": staticmethod(recipe_factory)})
    context = context_cls(name=recipe if name is None else name, factory=factory or recipe_factory, yaml=yaml)
    context.check_only = True
    context.executor = DEFAULT_EXECUTOR
    try:
        context.cli_execute(fn, ctx.args)
    except (RunContextError, ValueError) as e:
        fail(str(e).splitlines()[0])


app.command("report")(report_command.report)  # also run without this module: see entry


def refuse_an_empty_name(argv: list[str]) -> None:
    """``--name=`` (or ``--name ''``): NeMo-Run's commands would quietly take the recipe's name instead."""
    for at, arg in enumerate(argv):
        if arg in ("--name=", "-n=") or (arg in ("--name", "-n") and at + 1 < len(argv) and not argv[at + 1]):
            try:
                check_name("", "--name")
            except InputError as e:
                fail(str(e))


def main() -> None:
    """The console entry point: ``python launch.py`` and the installed ``megatron-mnist`` command."""
    argv = sys.argv[1:]
    refuse_an_empty_name(argv)
    recipes = {name: (factory, summary) for name, _, factory, summary in RECIPES}
    if argv and argv[0] in recipes and ({"--help", "-h"} & set(argv)):
        from megatron_mnist.launcher.recipe_help import recipe_help

        recipe_help(argv[0], *recipes[argv[0]])  # NeMo-Run's would import NeMo's collections (15-29 s)
        return
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)  # Ctrl-C: the tasks were asked to stop (submission.StopOnCtrlC), the summary printed


if __name__ == "__main__":
    main()
