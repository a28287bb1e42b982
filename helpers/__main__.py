"""Command line: `python -m helpers` checks the installation (an OK/FAIL line per requirement);
`python -m helpers results [README.md]` rebuilds the README results table from the notebooks."""

import sys

if sys.argv[1:2] == ["results"]:
    from .results import main

    sys.exit(main(sys.argv[2:]))

from .install import check_install

sys.exit(0 if check_install() else 1)
