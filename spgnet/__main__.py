"""``python -m spgnet`` is the same command line as ``spgnet``."""

import sys

from spgnet.cli import main

sys.exit(main())
