"""The error vocabulary, at the bottom so that whatever raises an error (the executor kinds, the data, the run
folder, the checks) needs nothing from what reports it (the launcher).

Every one is an :class:`InputError`: bad input found before anything runs — one line that names the value and what
was expected. The launcher prints it as it is and exits 2; code that reports to the user catches that one class.
"""


class InputError(ValueError):
    """Bad input, found before anything runs: one line naming the value and what was expected."""


class InvalidName(InputError):
    """A run, job or experiment name that could leave its folder or reach a shell as code (``names``)."""


class FieldError(InputError):
    """An executor field that cannot be submitted safely (``executors.fields``)."""


class UnknownExecutor(FieldError):
    """An executor of a kind this package does not offer: its checks and paths would be guesses (``executors``)."""


class PreflightError(InputError):
    """What would make a submission fail where it runs (a partition, an image, a venv), found before submitting."""


class ConfigFileError(InputError):
    """A config file that is not a recipe this command can run (``launcher.config_files``)."""


class RecipeError(InputError):
    """A recipe or an override that cannot run as given (``constraints``, ``launcher.recipe_checks``)."""


class SubmissionError(InputError):
    """What ``submit()`` found before submitting anything: the first problem of any check above."""


class RunError(InputError):
    """A run folder this recipe cannot continue: the run, its state and what to do (``run_record``)."""


class CheckpointError(InputError):
    """A checkpoint path that is missing, is not a checkpoint, or does not fit the model (``checkpoint_paths``)."""


class IDXError(InputError):
    """An IDX file that is missing, truncated or not an IDX file (``data.idx``)."""
