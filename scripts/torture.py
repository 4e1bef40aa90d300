"""scripts/torture: the long-run torture harness. Each workload mounts fresh
daemons of its own and drives them through their public faces only: the
control file, the sysfs view and the device files.

- fuzz: seeded control-file and sysfs input, valid and near misses of the
  grammar; after each write the layout's invariants hold, and a write that
  failed changed nothing.
- concurrency: worker processes write and check tagged records through
  pread, pwrite, O_DIRECT and mmap while a churner disables, resizes,
  destroys and re-creates their devices: no read returns another device's
  records or an older generation's, and no operation hangs.
- crash: SIGKILL with clients attached (no stale mount, no client in D
  state, errors rather than hangs), then SIGTERM during I/O and during a
  disable of a dirty mapping (exit 0, the stores in the memory file).

  scripts/torture [--minutes N] [--seed S] [--workload fuzz|concurrency|crash|all] [--json FILE]

Prints its figures at the end and exits 1 on any violation.
"""
import argparse
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import traceback

from daxfuse.client import mountinfo

from workloads.concurrency import concurrency
from workloads.crash import crash
from workloads.fuzz import fuzz
from workloads.harness import Stats


WORKLOADS = {"fuzz": fuzz, "concurrency": concurrency, "crash": crash}
SHARES = {"fuzz": 0.3, "concurrency": 0.45, "crash": 0.25}  # of the run's time


def run(workloads: list[str], seconds: float, seed: int, workdir: str) -> Stats:
    """The workloads in turn, for about seconds in all; each seeded on its own."""
    stats = Stats()
    total = sum(SHARES[w] for w in workloads)
    for w in workloads:
        share = seconds * SHARES[w] / total
        print(f"torture: {w} for {share:.0f} s", file=sys.stderr, flush=True)
        try:
            WORKLOADS[w](stats, share, random.Random(f"{seed}-{w}"), workdir)
        except Exception:
            stats.violation(f"{w} failed: {traceback.format_exc()}")
    return stats


def left_mounted(workdir: str) -> list[str]:
    return [m.point for m in mountinfo.mounts() if m.point.startswith(workdir + "/")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=1.0, help="about how long in all (default 1)")
    parser.add_argument("--seed", type=int, help="of every random choice (default: a random one, printed)")
    parser.add_argument("--workload", choices=[*WORKLOADS, "all"], default="all")
    parser.add_argument("--json", metavar="FILE", help="write the figures as JSON")
    args = parser.parse_args(argv)
    seed = random.randrange(1 << 32) if args.seed is None else args.seed
    workloads = list(WORKLOADS) if args.workload == "all" else [args.workload]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: unmount, stop what runs
    workdir = tempfile.mkdtemp(prefix="daxfuse-torture-")
    start = time.monotonic()
    try:
        stats = run(workloads, args.minutes * 60, seed, workdir)
    finally:
        leftovers = left_mounted(workdir)
        if leftovers:
            print(f"torture: left mounted: {leftovers}; {workdir} kept", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"torture: seed {seed}, workloads {' '.join(workloads)}, "
          f"{(time.monotonic() - start) / 60:.1f} min, {os.uname().release}, {os.cpu_count()} CPUs")
    print(stats.summary())
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"seed": seed, "workloads": workloads, "minutes": args.minutes} | stats.to_json(), f, indent=1)
    return 1 if stats.violations or leftovers else 0


if __name__ == "__main__":
    sys.exit(main())
