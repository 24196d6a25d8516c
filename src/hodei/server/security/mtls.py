"""mTLS for the agents' gRPC port (`hodei server --tls`): the PKI on disk and the port's
credentials.

The port requires a client certificate issued by the server's CA (gRPC checks the chain and the
dates in the handshake; server.api.grpc.mtls_worker reads the identity from it). Enrollment
cannot happen there: grpc's server credentials can only require client certificates or not ask
for them, never make them optional, so agents without one enroll over HTTPS (server.api.http.pki).
"""

from __future__ import annotations

import ipaddress
import logging

import grpc

from hodei.config import ServerSettings, split_addr
from hodei.errors import HodeiError
from hodei.security import pki
from hodei.security.pki_files import PkiPaths, init_pki, server_cert_names

log = logging.getLogger(__name__)


def _listen_names(settings: ServerSettings) -> list[str]:
    """Hosts the server listens on that a client may dial by name (not the wildcards)."""
    names = []
    for addr, port in ((settings.grpc_addr, 50051), (settings.http_addr, 8080)):
        host = split_addr(addr, port)[0]
        try:
            if ipaddress.ip_address(host).is_unspecified:
                continue
        except ValueError:
            pass
        names.append(host)
    return names


def prepare_pki(settings: ServerSettings) -> PkiPaths:
    """The home's PKI, created on first use (the embedded default needs no separate step)."""
    paths = PkiPaths.of_home(settings.home)
    if not paths.exists():
        init_pki(paths, [*pki.DEFAULT_SANS, *_listen_names(settings)])
        log.info("created a CA and a server certificate in %s", paths.root)
        return paths
    try:
        covered = server_cert_names(paths)
    except (OSError, HodeiError) as exc:
        raise HodeiError(f"cannot read the server certificate in {paths.root}: {exc}") from None
    missing = [h for h in _listen_names(settings) if h.lower() not in covered]
    if missing:
        log.warning(
            "the server certificate does not name %s; clients dialling that will fail "
            "(recreate it: hodei pki init --force --san ...)",
            ", ".join(missing),
        )
    return paths


def grpc_credentials(paths: PkiPaths) -> grpc.ServerCredentials:
    try:
        key, cert, ca = (
            p.read_bytes() for p in (paths.server_key, paths.server_cert, paths.ca_cert)
        )
    except OSError as exc:
        raise HodeiError(f"cannot read the server's TLS files in {paths.root}: {exc}") from None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=True
    )
