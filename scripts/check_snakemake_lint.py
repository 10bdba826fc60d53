#!/usr/bin/env python
"""CI's `snakemake --lint` check: every finding fails except "Specify a conda environment or container
for each rule" (rules carry no conda env on purpose: see README.md "Continuous integration").

Snakemake exits 1 whenever it prints a lint, so its output is read instead of its status: JSON when
the CLI honours --lint=json (Snakemake 9.27 prints text whatever the format), else the text blocks
("Lints for rule X (line N, file):" then "    * <title>:"). Run from the repository root.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

ALLOWED = "Specify a conda environment or container for each rule."


def findings(out: str, err: str) -> list[tuple[str, str]]:
    """(where, title) of every lint in Snakemake's output."""
    found = []
    try:
        doc = json.loads(out)
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        for kind in ("snakefiles", "rules"):
            for item in doc.get(kind) or []:
                found += [(str(item.get("for")), lint.get("title", "")) for lint in item.get("lints", [])]
        return found
    where = None
    for line in (out + err).splitlines():
        head = re.match(r"^Lints for (.*):$", line)
        item = re.match(r"^    \* (.*):$", line)
        if head:
            where = head.group(1)
        elif item and where is not None:
            found.append((where, item.group(1)))
    return found


def main() -> int:
    snakemake = Path(sys.executable).with_name("snakemake")
    r = subprocess.run([str(snakemake), "--lint=json"], capture_output=True, text=True)
    found = findings(r.stdout, r.stderr)
    if r.returncode != 0 and not found:  # it failed without printing a lint: the workflow did not parse
        print(f"CI: snakemake --lint failed (exit {r.returncode}):\n{r.stdout}{r.stderr}", file=sys.stderr)
        return 1
    other = [(w, t) for w, t in found if t != ALLOWED]
    for where, title in other:
        print(f"CI: snakemake lint: {where}: {title}")
    if other:
        print(f"CI: snakemake --lint: {len(other)} finding(s) besides the conda-env notice", file=sys.stderr)
        return 1
    print(f"CI: snakemake --lint clean ({len(found)} conda-env notice(s), see README)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
