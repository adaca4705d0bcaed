#!/usr/bin/env python
"""megatron-mnist's launcher: ``python launch.py --help`` (installed, also ``megatron-mnist --help``).

The commands live in ``src/megatron_mnist/launcher/cli.py`` (``entry.py`` picks the way in); the recipes they run are
the installed ``megatron_mnist_recipes`` (the ``recipes/`` folder beside this file, in the README's editable install).
"""

from megatron_mnist.launcher.entry import main

if __name__ == "__main__":
    main()
