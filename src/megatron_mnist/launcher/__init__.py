"""What runs where the user types: compose, check, submit, watch (``cli`` is ``launch.py``; ``submission`` is the
one submit flow behind it and ``megatron_mnist.submit``).

Nothing here imports torch, NeMo Lightning or megatron-core (``tests/unit/test_layout.py``): a dry run, a check or
``--help`` answers in about a second. Executor kinds live beside it, in ``megatron_mnist/executors/``.
"""

import warnings

# torch (imported by NeMo-Run, and by the report) warns about pynvml on every start: noise on the console, nothing a
# user can act on
warnings.filterwarnings("ignore", message="The pynvml package is deprecated")
