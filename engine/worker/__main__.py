"""``python -m engine.worker``: the same as ``joblog worker``."""

import sys

from engine.worker.cli import worker_main

sys.exit(worker_main(sys.argv[1:]))
