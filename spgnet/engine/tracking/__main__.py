"""``python -m spgnet.engine.tracking import-spool DIR`` (:func:`spgnet.engine.tracking.spool.main`)."""

import sys

from spgnet.engine.tracking.spool import main

sys.exit(main())
