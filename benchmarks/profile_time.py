"""Time `spgnet profile` over every registered experiment (target: under 30 s on 2 cores).

    python benchmarks/profile_time.py

Prints the CPU it ran on (model, flags, threads), the wall time of counting all reproducible rows
on the meta device, the number of rows and of distinct models counted, and the slowest rows.
"""

from __future__ import annotations

import time

from spgnet.analysis.profile import count, profile_all
from spgnet.runtime.hardware import describe_line


def main() -> None:
    print(f"on {describe_line()}", flush=True)
    started = time.perf_counter()
    rows = profile_all()
    elapsed = time.perf_counter() - started
    info = count.cache_info()
    print(f"profiled {len(rows)} experiments ({info.currsize} distinct model/input pairs) in {elapsed:.1f} s")
    for row in sorted(rows, key=lambda r: -r["seconds"])[:5]:
        print(f"  {row['name']:<24} {row['seconds']:.2f} s")
    print(f"target < 30 s: {'PASS' if elapsed < 30 else 'FAIL'}")


if __name__ == "__main__":
    main()
