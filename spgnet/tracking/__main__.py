"""``python -m spgnet.tracking import-spool DIR`` (:func:`spgnet.tracking.spool.main`)."""

import sys

from spgnet.tracking.spool import main

sys.exit(main())
