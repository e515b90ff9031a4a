"""A real OpenID provider on a loopback port (oidc-provider-mock), for the SSO login tests.

oidc-provider-mock is a Flask app built on Authlib's server side: discovery, JWKS,
the authorisation endpoint with a form where the test picks the subject, the token
endpoint (code with PKCE, refresh), userinfo and RP-initiated logout. Its own
`PUT /users/<sub>` sets the claims (groups) of a subject, and
`POST /users/<sub>/revoke-tokens` ends its tokens. It runs on werkzeug's threaded
server in a thread of the test process.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import oidc_provider_mock  # type: ignore[import-untyped]
import werkzeug.serving

from testbed.servers import HOST


@dataclass(frozen=True)
class OidcProvider:
    url: str  # the issuer

    def user_url(self, sub: str) -> str:
        return f"{self.url}/users/{sub}"


@contextmanager
def oidc_provider(
    *,
    sock: socket.socket | None = None,
    token_max_age: timedelta = timedelta(hours=1),
    refresh_tokens: bool = True,
) -> Iterator[OidcProvider]:
    """The provider on HOST and a free port, or on `sock` (bound, and refusing connections
    until then: an IdP that is down, then up), until the block ends."""
    app = oidc_provider_mock.app(
        require_nonce=True,
        issue_refresh_token=refresh_tokens,
        access_token_max_age=token_max_age,
    )
    port = 0 if sock is None else sock.getsockname()[1]
    fd = None
    if sock is not None:
        sock.listen()  # werkzeug serves a given socket as it is
        fd = sock.fileno()
    server = werkzeug.serving.make_server(HOST, port, app, threaded=True, fd=fd)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="oidc-provider")
    thread.start()
    try:
        yield OidcProvider(f"http://{HOST}:{server.server_address[1]}")
    finally:
        server.shutdown()
        thread.join(5)
        server.server_close()
