"""Resuming a Lightning-engine run: NeMo's ``AutoResume``, taught the CPU checkpoint layout. (Reading a checkpoint's
weights is the model's: ``megatron_mnist.model.weights``.)"""

from pathlib import Path

from nemo.lightning.resume import AutoResume


class Resume(AutoResume):
    """NeMo's ``AutoResume`` that also resumes CPU (Lightning-format) checkpoints.

    AutoResume looks for ``*-last`` folders; for a CPU checkpoint that folder holds only the context, and the
    weights and trainer state are in ``NAME-last.ckpt`` beside it. Hand Lightning that file.
    """

    def get_trainer_ckpt_path(self, model=None):
        path = super().get_trainer_ckpt_path(model)
        if path is not None and not Path(path).name == "weights":
            lightning_file = Path(path).with_name(Path(path).name + ".ckpt")
            if lightning_file.is_file():
                return lightning_file
        return path
