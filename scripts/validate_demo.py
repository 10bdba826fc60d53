"""Compare the demo cohort's outputs with the simulator's planted truth.

    python scripts/validate_demo.py [--results results] [--truth data/demo/truth.tsv] [--panels DIR]

--panels: the panels folder the run used (default resources/panels; the demo variant on the second
profile, config/demo_profile2, uses config/test_profile2/panels), so each tube is checked for the
read-out its panel feeds.

Prints, per sample and read-out, measured vs planted with a verdict, then the cohort summary
(results/cohort) against the planted truth and the CT0596 poster (with "PT01 MRD-negative until
month 8"), then the read-outs over time (results/cohort/mrd_timeline.tsv, nk_timeline.tsv and the
MRD / NK course columns of patients.tsv) against the planted truth, and ends with
'N passed, M failed'. Exit status 1 when anything failed. Bars: see mrdflow.demo.Bars.
"""

import argparse
import sys

from mrdflow.demo import Bars, PosterNumbers, format_report, validate, validate_cohort, validate_timelines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default="results")
    ap.add_argument("--truth", default="data/demo/truth.tsv")
    ap.add_argument("--panels", default=None, help="panels folder of the run (default resources/panels)")
    args = ap.parse_args(argv)
    checks = validate(args.results, args.truth, Bars(), panels=args.panels)
    checks += validate_cohort(args.results, args.truth, PosterNumbers(), panels=args.panels)
    checks += validate_timelines(args.results, args.truth, Bars(), panels=args.panels)
    print(format_report(checks))
    return 0 if all(c.passed for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
