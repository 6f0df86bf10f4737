"""``python -m sandbox.bench``: the same command as ``sandbox bench``."""

import sys

from .suite import main

sys.exit(main())
