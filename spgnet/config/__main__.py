"""``python -m spgnet.config``: write ``workflow/schemas/config.schema.yaml`` from
:class:`spgnet.config.workflow_config.WorkflowConfig` (:func:`~spgnet.config.workflow_config.main`)."""

from spgnet.config.workflow_config import main

raise SystemExit(main())
