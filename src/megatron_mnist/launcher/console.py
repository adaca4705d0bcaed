"""Where the launcher's words go: ``console`` (stdout), ``errors`` (stderr) and :func:`fail`, the one-line refusal
of bad input — for ``cli`` and for the commands that run without it (``report_command``)."""

import sys

from rich.console import Console
from rich.markup import escape

console = Console()
errors = Console(stderr=True)


def fail(message: str) -> None:
    """One line on stderr, exit status 2: bad input, found before anything ran."""
    # escaped: a value such as [digit_classifier] is the user's text, not rich markup (it vanished from the line)
    errors.print(f"[bold red]error:[/bold red] {escape(message)}", highlight=False, soft_wrap=True)
    sys.exit(2)
