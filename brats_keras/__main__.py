"""``python -m brats_keras predict | evaluate`` — see :mod:`brats_keras.cli`."""

import sys

from brats_keras.cli import main

if __name__ == "__main__":
    sys.exit(main())
