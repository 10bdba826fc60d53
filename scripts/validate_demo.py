"""Compare the demo cohort's outputs with the simulator's planted truth.

    python scripts/validate_demo.py [--results results] [--truth data/demo/truth.tsv]

Prints, per sample and read-out, measured vs planted with a verdict, and ends with
'N passed, M failed'. Exit status 1 when anything failed. Bars: see mrdflow.validate.Bars.
"""

import argparse
import sys

from mrdflow.validate import Bars, format_report, validate


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default="results")
    ap.add_argument("--truth", default="data/demo/truth.tsv")
    args = ap.parse_args(argv)
    checks = validate(args.results, args.truth, Bars())
    print(format_report(checks))
    return 0 if all(c.passed for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
