"""Errors shared by the floors above: a module of its own at the bottom, so that what raises them (the executor kinds)
needs nothing from what catches them (the launcher)."""


class PreflightError(ValueError):
    """What would make a submission fail, found before submitting it: one line naming the value and what was
    expected."""
