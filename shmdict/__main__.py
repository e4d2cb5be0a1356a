"""``python -m shmdict``: the same as the ``shmdict`` command (see shmdict.cli)."""

import sys

from shmdict.cli import main

if __name__ == "__main__":
    sys.exit(main())
