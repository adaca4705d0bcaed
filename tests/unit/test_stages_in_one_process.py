"""A pipeline's stages in one process: what one stage leaves in the process's globals must not trip the next."""

import pytest
from megatron.core.num_microbatches_calculator import get_current_global_batch_size
from nemo.lightning.data import setup_microbatch_calculator
from nemo.utils import AppState

from megatron_mnist.job.lightning_engine import fresh_batch_calculator


def test_a_stage_after_another_starts_megatrons_batch_calculator_anew():
    # NeMo's data sampler (MegatronStrategy.setup) sets Megatron's calculator once and afterwards asserts that each
    # stage's batch sizes are the first one's: on the H200 the one-job pipeline's predict (another global batch than
    # finetune's) failed there. The Lightning engine starts every train and predict from no calculator.
    app_state, before = AppState(), AppState().data_parallel_size
    app_state.data_parallel_size = 1
    try:
        setup_microbatch_calculator(0, 64, 64, None)  # finetune's batch
        with pytest.raises(AssertionError):
            setup_microbatch_calculator(0, 64, 128, None)  # predict's, without the reset
        fresh_batch_calculator()
        setup_microbatch_calculator(0, 64, 128, None)
        assert get_current_global_batch_size() == 128
    finally:
        fresh_batch_calculator()
        app_state.data_parallel_size = before
