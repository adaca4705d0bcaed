"""The console entry point, ``python launch.py`` and the installed ``megatron-mnist``: ``report`` runs straight away
(it reads run folders only: no NeMo-Run, recipes or executors to import), every other command through ``cli``."""

import sys


def main() -> None:
    argv = sys.argv[1:]
    if argv[:1] == ["report"]:
        from megatron_mnist.launcher import report_command

        report_command.run(argv)
        return
    from megatron_mnist.launcher.cli import main as cli_main

    cli_main()
