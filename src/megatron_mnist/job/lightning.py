"""The LightningModule, written once for Megatron's contract.

Under ``MegatronStrategy`` the schedule calls ``*_step`` with a micro-batch and applies ``*_loss_reduction`` to the
output; ``strategies.CPUStrategy`` keeps the same contract on a plain Lightning strategy, so this module never asks
where it runs.
"""

import lightning.pytorch as pl
import torch
from nemo.lightning import io
from nemo.lightning.megatron_parallel import MegatronLossReduction
from nemo.lightning.pytorch.optim import OptimizerModule

from megatron_mnist.data.dataset import MnistItem
from megatron_mnist.model.config import MNISTConfig
from megatron_mnist.model.losses import PassthroughLossReduction


class MNISTLightningModule(pl.LightningModule, io.IOMixin, io.ConnectorMixin):
    """Holds the model config and builds the model from it when the strategy asks (``configure_model``)."""

    def __init__(self, config: MNISTConfig, optim: OptimizerModule):
        super().__init__()
        self.config = config
        self.optim = optim
        self.optim.connect(self)  # gives this module configure_optimizers

    def configure_model(self) -> None:
        if not hasattr(self, "module"):
            self.module = self.config.configure_model()

    def forward(self, batch: MnistItem, batch_idx: int | None = None) -> dict[str, torch.Tensor]:
        return self.module(batch["data"])

    # The steps return the model's outputs; the strategy turns them into losses with the reductions below.
    def training_step(self, batch: MnistItem, batch_idx: int | None = None) -> dict[str, torch.Tensor]:
        return self(batch)

    validation_step = training_step
    predict_step = training_step

    def training_loss_reduction(self) -> MegatronLossReduction:
        return self.config.get_loss_reduction_class()()

    def validation_loss_reduction(self) -> MegatronLossReduction:
        return self.config.get_loss_reduction_class()()

    def predict_loss_reduction(self) -> MegatronLossReduction:
        return PassthroughLossReduction()

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        # Lightning logs a batch at its count of batches that stepped, which a resumed run gets wrong both ways: the
        # checkpoint holds it one short (saved during the validation before the count's increment), and the
        # validation Lightning repeats at the resumed step adds one. Rows came out labelled one step off (9..18 for
        # steps 10..19). The step to log a batch at is the optimizer steps taken before it, as in a straight run.
        self.trainer.fit_loop.epoch_loop._batches_that_stepped = self.trainer.global_step

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        # Only on the steps Lightning writes (every trainer.log_every_n_steps): each `log` call costs about a
        # quarter of this model's step in Python.
        if self.trainer._logger_connector.should_update_logs:
            # the step's loss over all its micro-batches (see CPUDDPStrategy/MegatronStrategy), averaged over ranks
            loss = outputs.get("step_loss", outputs["loss"]) if isinstance(outputs, dict) else outputs
            self.log("train_loss", loss, prog_bar=True, batch_size=1, sync_dist=True)
