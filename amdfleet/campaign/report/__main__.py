"""``python -m amdfleet.campaign.report RESULTS.json OUT_DIR`` re-renders a report."""

import sys

from amdfleet.campaign.report import main

sys.exit(main(sys.argv[1:]))
