"""Run the local schema registry (:class:`engine.registry.local.LocalRegistry`) until Ctrl-C.

``python -m engine.registry --port 8081`` prints its URL, for ``JOBLOG_SCHEMA_REGISTRY_URL``.
Everything is kept in memory and lost when it stops: for demos and tests, not production.
"""

from __future__ import annotations

import argparse
import signal
import threading

from engine.registry.local import LocalRegistry


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m engine.registry", description=__doc__)
    parser.add_argument("--port", type=int, default=8081, help="port on 127.0.0.1 (0: any)")
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with LocalRegistry(args.port) as registry:
        print(f"JOBLOG_SCHEMA_REGISTRY_URL={registry.url}", flush=True)
        try:
            while not stop.wait(0.2):
                pass
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
