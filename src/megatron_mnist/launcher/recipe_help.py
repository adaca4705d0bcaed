"""``launch.py RECIPE --help``: what a recipe takes, read from the recipe itself — no training stack imported.

NeMo-Run's own help for an entrypoint loads every installed NeMo-Run factory (``nemo.collections.llm`` among them:
15–29 s on a 2-core machine, with CUDA and NeMo warnings in the text) and lists the entry function's parameters,
which are untyped. This one lists what a user sets: the factory's arguments (``--factory``), every dotted override
of the composed recipe with its type and default, the run options and the executors with their settings.
"""

import inspect
import typing

import fiddle as fdl
from rich.console import Console
from rich.table import Table

from megatron_mnist import executors
from megatron_mnist.launcher.recipe_checks import dotted_parameters

RUN_OPTIONS = [
    ("--dryrun", "run every check, print the composed config and exactly what would be submitted; run nothing"),
    ("--yes", "do not ask before submitting (needed where there is no terminal)"),
    ("--name NAME", "the job's and experiment's name (default: the recipe's)"),
    ("--detach", "submit and return (executor=slurm): follow with `launch.py watch ID` or `status ID`"),
    ("--factory 'CALL'", "the factory's own arguments, e.g. --factory \"pretrain(name='wide', max_steps=2000)\""),
    ("--yaml FILE", "run a recipe file written by --to-yaml / --to-toml / --to-json (overrides apply on top)"),
    ("--to-yaml FILE", "write the composed recipe to FILE instead of running it (also --to-toml, --to-json)"),
    ("--sweep KEY=A,B ...", "one task per combination of the values, side by side; a table of final val losses"),
    ("--skip-checks", "submit without the pre-submit checks (names and executor fields are still checked)"),
    ("--tail-logs", "stream the jobs' raw logs instead of the progress view"),
]


def type_name(annotation) -> str:
    """``int``, ``Optional[int]``, ``auto|gpu|cpu`` — short, for a table."""
    if annotation is inspect.Parameter.empty:
        return ""
    if typing.get_origin(annotation) is typing.Literal:
        return "|".join(str(a) for a in typing.get_args(annotation))
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Union and len(args) == 1:
        return f"{type_name(args[0])} or None"
    if args:
        return f"{getattr(typing.get_origin(annotation), '__name__', 'list')}[{', '.join(map(type_name, args))}]"
    return getattr(annotation, "__name__", str(annotation))


def _value(recipe: fdl.Buildable, key: str):
    value = recipe
    for part in key.split("."):
        value = getattr(value, part)
    return f"<{value.__fn_or_cls__.__name__}>" if isinstance(value, fdl.Buildable) else repr(value)


def recipe_help(name: str, factory, summary: str) -> None:
    console = Console(highlight=False, soft_wrap=False)
    console.print(f"[bold]Usage:[/bold] launch.py {name} [OPTIONS] [KEY=VALUE ...] [executor=KIND executor.KEY=V ...]")
    console.print(f"\n{summary}\n")
    console.print(inspect.cleandoc(factory.__doc__ or ""), markup=False)
    recipe = factory()
    table = Table("override", "type", "default", title=f"The {name} recipe's keys (KEY=VALUE)", title_justify="left")
    for key, annotation in dotted_parameters(recipe).items():
        table.add_row(key, type_name(annotation), _value(recipe, key))
    console.print(table)
    table = Table("argument", "type", "default", title="The factory's arguments (--factory)", title_justify="left")
    for param in inspect.signature(factory).parameters.values():
        table.add_row(param.name, type_name(param.annotation), repr(param.default))
    console.print(table)
    table = Table("option", "what it does", title="Run options", title_justify="left")
    for option, what in RUN_OPTIONS:
        table.add_row(option, what)
    console.print(table)
    table = Table("executor=", "its settings (executor.KEY=VALUE; also any field of the NeMo-Run executor)",
                  title="Executors", title_justify="left")  # fmt: skip
    for kind in executors.KINDS.values():
        params = inspect.signature(kind.factory).parameters.values()
        table.add_row(kind.name, ", ".join(f"{p.name}={p.default!r}" for p in params))
    console.print(table)
    console.print(
        f"\nExamples:\n  python launch.py {name} trainer.max_steps=50 --dryrun\n"
        f"  python launch.py {name} executor=slurm executor.partition=gpu executor.gpus_per_node=1 --yes"
    )
