"""The export command moved: it is ``python -m server export`` (the I/O lives in server/)."""

import sys

print(
    "python -m simulation export is now: python -m server export (same arguments)", file=sys.stderr
)
sys.exit(2)
