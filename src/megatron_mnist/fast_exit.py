"""Ending a process whose work is done without Python's own teardown, for the commands that import torch (a job,
``launch.py report``).

Once a command has finished — its result printed, its files closed — Python's shutdown still tears down every
module it imported: with torch, NeMo, Lightning and megatron-core loaded, 0.3–0.7 s of a 2-core machine after a job,
0.65 s of a 2.9 s report. :func:`run_then_exit` runs a command and then exits the way a normal exit does — the exit
handlers libraries registered (logging's flush, multiprocessing's joins of its children, torch's), then the output
flushed — skipping only that teardown. A command that raises ends as Python ends it (the traceback, status 1).
"""

import atexit
import ctypes
import os
import sys


def run_then_exit(command) -> None:
    """Call ``command()`` (a Typer or Click app ends by raising ``SystemExit``), then exit with its status."""
    try:
        command()
    except SystemExit as ended:
        exit_without_teardown(ended.code)
    exit_without_teardown(0)


def exit_without_teardown(status) -> None:
    """Exit with ``status`` (a ``SystemExit`` code: None, a number, or a message) after the exit handlers."""
    code = 0 if status is None else status if isinstance(status, int) else 1
    if not isinstance(status, (int, type(None))):
        print(status, file=sys.stderr)  # what SystemExit("message") prints
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed, or a pipe whose reader left
            pass
    try:
        ctypes.CDLL(None).fflush(None)  # what C libraries printed (NCCL, gloo) and left in their stdio buffers
    except (OSError, AttributeError):
        pass
    os._exit(code)
