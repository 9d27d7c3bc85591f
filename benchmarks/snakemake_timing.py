"""Per-rule job time and wall time of a finished Snakemake run, from its log.

    python benchmarks/snakemake_timing.py .snakemake/log/<run>.snakemake.log

Each job's time runs from the timestamp printed before it starts to the one before its
"Finished jobid" line (whole seconds, as Snakemake prints them).
"""

from __future__ import annotations

import re
import sys
from collections import defaultdict
from datetime import datetime

STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
START = re.compile(r"^(?:local)?rule (\w+):$")
JOBID = re.compile(r"^\s+jobid: (\d+)$")
DONE = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)$")


def main(path: str) -> None:
    stamp = first = last = None
    started: dict[str, datetime] = {}
    pending_rule = None
    per_rule: dict[str, list[float]] = defaultdict(list)
    for line in open(path):
        line = line.rstrip("\n")
        if m := STAMP.match(line):
            stamp = datetime.strptime(m[1], "%a %b %d %H:%M:%S %Y")
            first = first or stamp
            last = stamp
        elif m := START.match(line):
            pending_rule = (m[1], stamp)
        elif (m := JOBID.match(line)) and pending_rule:
            started[m[1]] = pending_rule[1]
            pending_rule = None
        elif m := DONE.match(line):
            if m[1] in started:
                per_rule[m[2]].append((stamp - started[m[1]]).total_seconds())
    print(f"wall time: {(last - first).total_seconds() / 60:.1f} min ({first:%H:%M:%S} to {last:%H:%M:%S})")
    print("| rule | jobs | job-seconds | longest job s |")
    print("|---|---:|---:|---:|")
    for rule, times in sorted(per_rule.items(), key=lambda kv: -sum(kv[1])):
        print(f"| {rule} | {len(times)} | {sum(times):.0f} | {max(times):.0f} |")


if __name__ == "__main__":
    main(sys.argv[1])
