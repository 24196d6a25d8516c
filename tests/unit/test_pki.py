"""The pure certificate logic (security.pki) and the PKI files and registry (security.pki_files)."""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from hodei.errors import ConflictError, NotFoundError, ValidationError
from hodei.security import pki
from hodei.security.pki_files import CertRegistry, PkiPaths, init_pki, load_ca, server_cert_names
from hodei.security.trust import https_verify

NOW = 1_800_000_000.0


def _ca() -> tuple[pki.PrivateKey, x509.Certificate]:
    return pki.make_ca("test CA", NOW)


def test_agent_certificate_names_the_worker_not_what_the_csr_asked_for() -> None:
    ca_key, ca_cert = _ca()
    agent_key = pki.new_key()
    csr = pki.make_csr(agent_key, common_name="admin")
    cert = pki.sign_agent_csr(ca_key, ca_cert, csr, "local-1234", NOW, 3600)
    info = pki.cert_info(cert)
    assert info.worker_id == "local-1234"
    assert info.not_after == pytest.approx(NOW + 3600)
    assert info.serial == f"{cert.serial_number:x}"
    assert cert.public_key() == agent_key.public_key()  # the agent's key, certified
    assert pki.issued_by(cert, ca_cert)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_a_certificate_from_another_ca_is_not_issued_by_ours() -> None:
    _, ca_cert = _ca()
    other_key, other_cert = _ca()
    cert = pki.sign_agent_csr(other_key, other_cert, pki.make_csr(pki.new_key()), "w", NOW, 60)
    assert not pki.issued_by(cert, ca_cert)
    assert pki.issued_by(cert, other_cert)


def test_agent_certificates_never_outlive_the_ca() -> None:
    ca_key, ca_cert = pki.make_ca("short CA", NOW, lifetime_s=100)
    cert = pki.sign_agent_csr(ca_key, ca_cert, pki.make_csr(pki.new_key()), "w", NOW, 86400)
    assert pki.cert_info(cert).not_after == pytest.approx(NOW + 100)


def test_bad_csrs_are_refused() -> None:
    ca_key, ca_cert = _ca()
    with pytest.raises(ValidationError, match="not a PEM CSR"):
        pki.sign_agent_csr(ca_key, ca_cert, b"garbage", "w", NOW, 60)
    weak = ec.generate_private_key(ec.SECP192R1())
    with pytest.raises(ValidationError, match="too small"):
        pki.sign_agent_csr(ca_key, ca_cert, pki.make_csr(weak), "w", NOW, 60)
    # A CSR whose signature does not match its key: the requester does not hold the key.
    good = pki.make_csr(pki.new_key()).decode()
    body = good.splitlines()
    der_line = body[len(body) // 2]
    flipped = der_line[:-2] + ("A" if der_line[-2] != "A" else "B") + der_line[-1]
    tampered = "\n".join([*body[: len(body) // 2], flipped, *body[len(body) // 2 + 1 :]])
    with pytest.raises(ValidationError):
        pki.sign_agent_csr(ca_key, ca_cert, tampered.encode(), "w", NOW, 60)
    with pytest.raises(ValidationError, match="worker id"):
        pki.sign_agent_csr(ca_key, ca_cert, pki.make_csr(pki.new_key()), "", NOW, 60)


def test_server_certificate_covers_its_names_and_addresses() -> None:
    ca_key, ca_cert = _ca()
    _, cert = pki.make_server_cert(ca_key, ca_cert, ["localhost", "127.0.0.1", "[::1]"], NOW)
    assert pki.cert_names(cert) == {"localhost", "127.0.0.1", "::1"}
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    with pytest.raises(ValidationError):
        pki.parse_sans(["bad name"])
    with pytest.raises(ValidationError):
        pki.parse_sans([" "])


def test_renewal_is_due_two_thirds_into_the_real_lifetime() -> None:
    ca_key, ca_cert = _ca()
    cert = pki.sign_agent_csr(ca_key, ca_cert, pki.make_csr(pki.new_key()), "w", NOW, 30)
    info = pki.cert_info(cert)
    assert pki.renew_at(info.not_before, info.not_after) == pytest.approx(NOW + 20)


def test_init_writes_private_keys_0600_and_refuses_to_overwrite(tmp_path: Path) -> None:
    paths = PkiPaths.of_home(tmp_path)
    init_pki(paths, ["localhost", "10.1.2.3"])
    for key in (paths.ca_key, paths.server_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert server_cert_names(paths) == {"localhost", "10.1.2.3"}
    ca_before = paths.ca_cert.read_bytes()
    with pytest.raises(ConflictError, match="--force"):
        init_pki(paths, ["localhost"])
    assert paths.ca_cert.read_bytes() == ca_before
    init_pki(paths, ["localhost"], force=True)
    assert paths.ca_cert.read_bytes() != ca_before
    key, cert = load_ca(paths)
    assert cert.public_key() == key.public_key()


def test_registry_revokes_by_worker_or_serial_and_persists(tmp_path: Path) -> None:
    path = tmp_path / "certs.json"
    reg = CertRegistry(path)
    now = time.time()
    a1 = reg.add(pki.CertInfo("w-a", "aa01", now - 60, now + 600), {"gpu": "1"})
    reg.add(pki.CertInfo("w-a", "aa02", now - 60, now + 900), {"gpu": "1"})
    b1 = reg.add(pki.CertInfo("w-b", "bb01", now - 60, now + 600), {})
    assert reg.valid_until("w-a") == pytest.approx(now + 900)
    assert [r.serial for r in reg.revoke("w-a")] == ["aa01", "aa02"]
    assert reg.valid_until("w-a") == 0.0
    assert reg.revoke("0xBB01")[0].serial == b1.serial  # serials as `pki list` or openssl print
    with pytest.raises(NotFoundError):
        reg.revoke("nobody")
    again = CertRegistry(path).load()  # a restart
    assert again.is_revoked(a1.serial) and again.is_revoked("bb01")
    assert again.get("aa01") is not None and again.get("aa01").labels == {"gpu": "1"}  # type: ignore[union-attr]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_registry_forgets_certificates_long_expired(tmp_path: Path) -> None:
    path = tmp_path / "certs.json"
    reg = CertRegistry(path)
    now = time.time()
    reg.add(pki.CertInfo("old", "01", now - 30 * 86400, now - 20 * 86400), {})
    reg.add(pki.CertInfo("new", "02", now - 60, now + 60), {})
    assert [c["serial"] for c in json.loads(path.read_text())["certs"]] == ["02"]


def test_cli_trusts_hodei_ca_or_the_homes_ca_for_https(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HODEI_CA", raising=False)
    monkeypatch.setenv("HODEI_HOME", str(tmp_path))
    assert https_verify("http://127.0.0.1:8080") is True
    assert https_verify("https://127.0.0.1:8080") is True  # no CA in the home: system store
    init_pki(PkiPaths.of_home(tmp_path), ["localhost"])
    context = https_verify("https://127.0.0.1:8080")
    assert not isinstance(context, bool)
    subjects = [c["subject"] for c in context.get_ca_certs()]
    assert ((("commonName", "Hodei Jobs CA"),),) in subjects
    monkeypatch.setenv("HODEI_CA", str(tmp_path / "missing.crt"))
    with pytest.raises(ValidationError, match="cannot load"):
        https_verify("https://127.0.0.1:8080")
