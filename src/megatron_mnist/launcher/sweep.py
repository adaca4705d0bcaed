"""``--sweep KEY=V1,V2 ...``: the axes of a sweep read from the command line, and its table of results."""

import csv
import re
from pathlib import Path

from megatron_mnist.launcher.console import console, fail


def split_sweep(args: list[str]) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """``--sweep KEY=V1,V2 [KEY=V1,V2 ...]``: the axes (the arguments after --sweep up to the first that is not
    KEY=V1,V2,... with two values or more), and the other arguments."""
    if "--sweep" not in args:
        return args, []
    at = args.index("--sweep")
    axes, end = [], at + 1
    while end < len(args) and re.fullmatch(r"[\w.]+=[^\[\]{},]+(,[^\[\]{},]+)+", args[end]):
        key, values = args[end].split("=", 1)
        axes.append((key, values.split(",")))
        end += 1
    if not axes:
        fail("--sweep: expected KEY=V1,V2[,...] after it, e.g. --sweep optim.lr=1e-3,1e-4 data.micro_batch_size=32,64")
    return args[:at] + args[end:], axes


def sweep_table(out: Path, keys: list[str], combos: dict[str, tuple]) -> None:
    """Final val loss of each task, printed and written to OUT/sweep.csv."""
    from rich.table import Table

    from megatron_mnist.run_logs import logged

    # "after steps" counts optimizer steps, as the console and the summaries do (the CSV's step column is 0-based:
    # the validation after the 20th step is its row 19)
    table = Table("task", *keys, "final val_loss", "after steps")
    rows = []
    for name, combo in combos.items():
        val = logged(out / name, "val_loss") if (out / name).is_dir() else []
        loss, steps = (str(val[-1][1]), str(val[-1][0] + 1)) if val else ("", "")
        rows.append([name, *combo, loss, steps])
        table.add_row(*rows[-1])
    console.print(table)
    if out.is_dir():
        with open(out / "sweep.csv", "w", newline="") as f:
            csv.writer(f).writerows([["task", *keys, "final_val_loss", "steps"], *rows])
        console.print(f"sweep table: {out / 'sweep.csv'}", highlight=False, soft_wrap=True)
