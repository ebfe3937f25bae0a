"""JSON from clients, parsed with every failure turned into one error: never a 500."""

from __future__ import annotations

import json
from typing import Any


class MalformedJsonError(ValueError):
    """Text that is not JSON this server accepts; the message says why."""


def parse_json(data: str | bytes) -> Any:
    """``json.loads``, with all its refusals as :class:`MalformedJsonError`.

    Bad syntax, bad UTF-8, integers of more digits than Python converts and nesting deeper
    than the parser recurses are all refused the same way.
    """
    try:
        return json.loads(data)
    except RecursionError:
        raise MalformedJsonError("nested too deeply") from None
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError, the int digits limit
        raise MalformedJsonError(str(error)[:200]) from None
