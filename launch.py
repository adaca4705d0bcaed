#!/usr/bin/env python
"""megatron-mnist's launcher: ``python launch.py --help`` (installed, also ``megatron-mnist --help``).

The commands live in ``src/megatron_mnist/launcher/cli.py`` (``entry.py`` picks the way in); this file only makes
the ``recipes`` beside it the ones used, from any working directory.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from megatron_mnist.launcher.entry import main  # noqa: E402

if __name__ == "__main__":
    main()
