"""The agent's certificate holder (agent.tls): it installs only certificates for its own key and
its own worker, and counts generations so new connections pick up a renewed certificate."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from hodei.agent.tls import AgentTls
from hodei.errors import HodeiError
from hodei.security import pki


def _issue(key: pki.PrivateKey, worker_id: str, lifetime_s: float = 30) -> bytes:
    cert = pki.sign_agent_csr(
        CA_KEY, CA_CERT, pki.make_csr(key), worker_id, time.time(), lifetime_s
    )
    return pki.cert_to_pem(cert)


CA_KEY, CA_CERT = pki.make_ca("agent test CA", time.time())


def test_installs_its_own_certificates_and_counts_generations() -> None:
    tls = AgentTls(pki.cert_to_pem(CA_CERT), "https://127.0.0.1:8080")
    key = pki.new_key()
    tls._install(key, _issue(key, "w-1"))
    assert (tls.worker_id, tls.generation) == ("w-1", 1)
    assert tls.renew_at() == pytest.approx(time.time() + 20, abs=2)
    assert not tls.expired()
    renewed = pki.new_key()
    tls._install(renewed, _issue(renewed, "w-1"))
    assert tls.generation == 2
    with pytest.raises(HodeiError, match="another key"):
        tls._install(pki.new_key(), _issue(key, "w-1"))
    other = pki.new_key()
    with pytest.raises(HodeiError, match="worker 'w-2'"):
        tls._install(other, _issue(other, "w-2"))
    assert tls.generation == 2  # nothing refused was installed


def test_from_file_wants_a_readable_ca_and_an_https_url(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    with pytest.raises(HodeiError, match="cannot read"):
        AgentTls.from_file(str(ca), "https://127.0.0.1:8080")
    ca.write_bytes(pki.cert_to_pem(CA_CERT))
    with pytest.raises(HodeiError, match="https://"):
        AgentTls.from_file(str(ca), "http://127.0.0.1:8080")
    assert AgentTls.from_file(str(ca), "https://127.0.0.1:8080/").enroll_url == (
        "https://127.0.0.1:8080"
    )
