"""``python -m engine.scheduler``: the same as ``joblog scheduler``."""

import sys

from engine.scheduler.cli import scheduler_main

sys.exit(scheduler_main(sys.argv[1:]))
