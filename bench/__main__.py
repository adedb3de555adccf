"""``python -m bench``: every issue-6 bench and a combined summary (see bench/all.py)."""

import sys

from bench.all import main

sys.exit(main())
