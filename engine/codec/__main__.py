"""Print joblog's topic schemas for clients in other languages.

``python -m engine.codec`` lists each topic schema with its fingerprint;
``python -m engine.codec Event`` prints the self-contained Event schema (shared types inlined),
ready for any Avro library or a schema registry.
"""

from __future__ import annotations

import json
import sys

from engine.codec.schemas import REGISTRY, TOPIC_SCHEMAS
from engine.errors import UnknownSchemaError


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = sys.argv[1:] if argv is None else argv
    if not args:
        for name in TOPIC_SCHEMAS:
            print(f"{name:<12} {REGISTRY.current(name).fingerprint.hex()}")
        return 0
    try:
        schema = REGISTRY.current(args[0]).schema
    except UnknownSchemaError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(json.dumps(schema, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
