"""Regenerate ``sparkplug_b_pb2.py`` and its type stub from ``sparkplug_b.proto`` (needs
grpcio-tools).

python -m server.mqtt.proto.generate
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).parent


def main() -> int:
    from grpc_tools import protoc

    return protoc.main(
        [
            "protoc",
            f"--proto_path={HERE}",
            f"--python_out={HERE}",
            f"--pyi_out={HERE}",
            str(HERE / "sparkplug_b.proto"),
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
