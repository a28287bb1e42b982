"""Command line: `python -m helpers` checks the installation (an OK/FAIL line per requirement);
`python -m helpers results [README.md]` rebuilds the README results table from the notebooks."""

import sys

from .env import check_install
from .results import main as results_main

if sys.argv[1:2] == ["results"]:
    sys.exit(results_main(sys.argv[2:]))
sys.exit(0 if check_install() else 1)
