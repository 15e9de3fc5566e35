"""``spgnet experiments``: list the registry (with ``--experiments FILE``, your rows after it)."""

from __future__ import annotations

import dataclasses
import json

from spgnet.config import load_registry, table_order
from spgnet.errors import SpgnetError


def list_experiments(args) -> int:
    registry = load_registry(extra=getattr(args, "experiments", None))
    rows = [e for e in registry.values() if args.table is None or e.table == args.table]
    if not rows:
        tables = sorted({e.table for e in registry.values()}, key=table_order)
        raise SpgnetError(f"no experiment in table '{args.table}' (tables: {', '.join(tables)})")
    rows.sort(key=lambda e: table_order(e.table))
    if args.json:
        print(json.dumps([
            {
                "name": e.name,
                "table": e.table,
                "row": e.row,
                "kind": "yours" if e.own else "reproduced" if e.reproducible else "cited",
                "columns": e.columns,
                "paper": {k: v for k, v in dataclasses.asdict(e.paper).items() if v is not None},
                "model": dataclasses.asdict(e.model) if e.model else None,
            }
            for e in rows
        ], indent=2, ensure_ascii=False))
        return 0
    width = max(len(e.name) for e in rows)
    for e in rows:
        miou = "-" if e.paper.miou is None else f"{e.paper.miou:.2f}"
        kind = f"  (yours: {e.source})" if e.own else "" if e.reproducible else "  (cited)"
        print(f"{e.name:<{width}}  Table {e.table:<4} mIoU {miou:>6}  {e.row}{kind}")
    return 0
