"""``python -m cross_instance.fakeprovider``: the same as ``python -m
cross_instance.testing.fakeprovider``."""

import sys

from cross_instance.testing.fakeprovider.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
