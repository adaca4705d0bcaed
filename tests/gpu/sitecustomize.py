"""Only for the GPU machine's image (numpy 2): megatron-core's parallel checkpoint save calls ``np.product``, which
numpy 2 removed. Installing numpy 1.26 there breaks the image's scipy, so the GPU suite puts this folder on
PYTHONPATH instead (tests/gpu/run_on_device.sh). The package itself pins numpy<2 and needs none of this."""

import numpy as np

if not hasattr(np, "product"):
    np.product = np.prod
