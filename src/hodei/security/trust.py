"""Which CA the CLI trusts for an https:// server: HODEI_CA when set (that CA only), else the
CA of HODEI_HOME (a server's own home: `hodei pki init` or `hodei server --tls` made it) on top
of the system's, else the system's trust store."""

from __future__ import annotations

import os
import ssl

from hodei.config import default_home
from hodei.errors import ValidationError


def https_verify(url: str) -> ssl.SSLContext | bool:
    """The `verify` argument for an httpx client of `url`."""
    if not url.lower().startswith("https://"):
        return True
    explicit = os.environ.get("HODEI_CA", "")
    cafile = explicit or str(default_home() / "pki" / "ca.crt")
    if not explicit and not os.path.exists(cafile):
        return True
    try:
        context = ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise ValidationError(f"cannot load the CA certificate {cafile}: {exc}") from None
    if not explicit:
        context.load_default_certs()
    return context
