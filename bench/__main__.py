"""``python -m bench``: every bench and a combined summary (see bench/all.py)."""

import sys

from bench.all import main

sys.exit(main())
