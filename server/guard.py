"""Who may change the plant: a bearer token when one is set, else trusted networks only;
and never a web page of another origin.

Faults and commands change what every dashboard sees, so every mutating request
(POST, PUT, PATCH, DELETE) is checked; reads stay open. A browser names the page's origin in
``Origin`` (and ``Sec-Fetch-Site``) on every such request: a mutation from a page is accepted
only from the server's own origin or one of ``--control-origins``, whatever ``--cors-origins``
allows for reads; the own origin counts without a token only under an address or localhost
(DNS rebinding). Clients that are not browsers (curl, scripts) send neither header and are
judged by the token or their network alone.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from ipaddress import ip_address

from aiohttp import web
from yarl import URL

from server.errors import json_error
from server.keys import settings_key

MUTATING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@web.middleware
async def guard_mutations(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    if request.method in MUTATING_METHODS:
        refusal = refuse_cross_origin(request) or refuse(request)
        if refusal is not None:
            return refusal
    return await handler(request)


def refuse_cross_origin(request: web.Request) -> web.Response | None:
    """The 403 for a mutation sent by a page of an origin not trusted for control, or None."""
    origin = request.headers.get("Origin")
    site = request.headers.get("Sec-Fetch-Site", "")
    if origin is None:
        if site in ("cross-site", "same-site"):  # a browser that withheld the origin
            return _cross_origin()
        return None
    settings = request.app[settings_key]
    if origin in settings.control_origins:
        return None
    if origin == f"{request.scheme}://{request.host}" and (
        settings.control_token is not None or _names_this_host(request.host)
    ):
        return None
    return _cross_origin()


def _names_this_host(host: str) -> bool:
    """Whether a ``Host`` header names this machine by address or as localhost.

    Without a token the server trusts its network (loopback), and a page of its own origin
    then changes the plant. A DNS-rebinding page (``evil.example`` re-resolved to
    127.0.0.1) is of "its own origin" too, under its own name: so the own origin counts
    only under an address or localhost, or with the token, which such a page lacks.
    """
    try:
        name = URL(f"//{host}").host or ""
    except ValueError:  # not a host at all
        return False
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        ip_address(name.strip("[]"))
    except ValueError:
        return False
    return True


def _cross_origin() -> web.Response:
    return json_error(
        403,
        "cross_origin",
        "pages of other origins may not change the plant; the server's own pages and those "
        "of --control-origins may",
    )


def refuse(request: web.Request) -> web.Response | None:
    """The 401/403 answer for a request that may not change the plant, or None."""
    settings = request.app[settings_key]
    if settings.control_token is not None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            response = json_error(
                401, "unauthorized", "this endpoint needs 'Authorization: Bearer <CONTROL_TOKEN>'"
            )
            response.headers["WWW-Authenticate"] = 'Bearer realm="control"'
            return response
        offered = token.strip().encode("utf-8", "surrogateescape")  # any bytes the peer sent
        if not hmac.compare_digest(offered, settings.control_token.encode()):
            return json_error(403, "forbidden", "the bearer token is not the control token")
        return None
    remote = request.remote
    try:
        trusted = remote is not None and any(
            ip_address(remote) in network for network in settings.control_networks
        )
    except ValueError:
        trusted = False
    if trusted:
        return None
    return json_error(
        403,
        "forbidden",
        f"changes are accepted only from {', '.join(map(str, settings.control_networks))} "
        "unless the server has a CONTROL_TOKEN; send it as 'Authorization: Bearer <token>'",
    )
