"""``spgnet experiments``: list the registry."""

from __future__ import annotations

import dataclasses
import json

from spgnet.config import load_registry, table_order


def list_experiments(args) -> int:
    rows = [e for e in load_registry().values() if args.table is None or e.table == args.table]
    rows.sort(key=lambda e: table_order(e.table))
    if args.json:
        print(json.dumps([
            {
                "name": e.name,
                "table": e.table,
                "row": e.row,
                "kind": "reproduced" if e.reproducible else "cited",
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
        kind = "" if e.reproducible else "  (cited)"
        print(f"{e.name:<{width}}  Table {e.table:<4} mIoU {miou:>6}  {e.row}{kind}")
    return 0
