"""This package's defaults, stated once: the recipes, the builders, the data module, the model config, the engines
and the launcher take them from here. Imports nothing, so both rooms (where the user types, and the node) read it.

Where they differ from the seed tutorial (BioNeMo's example_model, which trains 100 steps at Adam lr 1e-4 and
validates every 5: a demonstration run), ours are chosen for a run a user looks at: the default pipeline reaches
~0.83 held-out accuracy on the embedded sample (README), and a validation (with its checkpoint save) every 50 steps
rather than every 5 keeps them a small part of the run's time. The seed's settings::

    python launch.py pretrain trainer.max_steps=100 trainer.val_check_interval=5 optim.lr=1e-4
"""

MAX_STEPS = 500  # the seed: 100
LEARNING_RATE = 1e-3  # the seed: 1e-4
VAL_CHECK_INTERVAL = 50  # optimizer steps between validations (and checkpoints); the seed: 5
MICRO_BATCH_SIZE = 64  # digits per forward pass on one rank, as the seed's (global = micro x ranks unless set)
# prediction keeps no activations for a backward pass: 4 forward passes for the 2,000 held-out digits instead of 32
PREDICT_MICRO_BATCH_SIZE = 500
HIDDEN_SIZE = 64  # the width of the trunk's and the decoder's hidden layer, as the seed's
LOG_DIR = "runs"  # where run folders go (LOG_DIR/NAME), relative to where the job starts
SEED = 1234  # Python's, numpy's, torch's and megatron-core's model-parallel generators; NeMo's default too
