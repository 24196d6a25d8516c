"""Pure certificate logic (no files, no network): the CA, server and agent certificates.

Keys are ECDSA P-256: small, fast to generate (an agent makes a new one at every renewal) and
supported by every TLS stack gRPC and Python use. An agent certificate names its worker id in
its subject's common name, which is what the server reads back as the worker's identity.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hodei.errors import ValidationError

PrivateKey = ec.EllipticCurvePrivateKey
CA_LIFETIME_S = 10 * 365 * 86400.0
SERVER_LIFETIME_S = 825 * 86400.0  # the longest lifetime common TLS clients accept
BACKDATE_S = 60.0  # tolerate clocks a little behind ours
RENEW_FRACTION = 2 / 3  # an agent renews once this much of its certificate's life has passed
DEFAULT_SANS = ("localhost", "127.0.0.1", "::1")
MAX_WORKER_ID = 128


@dataclass(frozen=True, slots=True)
class CertInfo:
    """What the server needs from an agent certificate."""

    worker_id: str
    serial: str  # lower-case hex, as `hodei pki list` shows it
    not_before: float  # unix seconds
    not_after: float


def new_key() -> PrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_to_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def key_from_pem(data: bytes) -> PrivateKey:
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValidationError("the CA key is not an EC key")
    return key


def cert_to_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def cert_from_pem(data: bytes) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        raise ValidationError("not a PEM certificate") from None


def serial_hex(serial: int) -> str:
    return f"{serial:x}"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _window(now: float, lifetime_s: float) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.fromtimestamp(now - BACKDATE_S, dt.UTC)
    return start, dt.datetime.fromtimestamp(now + lifetime_s, dt.UTC)


def make_ca(
    common_name: str, now: float, lifetime_s: float = CA_LIFETIME_S
) -> tuple[PrivateKey, x509.Certificate]:
    """A self-signed CA that may sign end-entity certificates only (path length 0)."""
    key = new_key()
    start, end = _window(now, lifetime_s)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def parse_sans(names: Sequence[str]) -> list[x509.GeneralName]:
    """Host names and IP addresses ('localhost', '10.0.0.5', '::1') as subject alt names."""
    result: list[x509.GeneralName] = []
    for raw in names:
        name = raw.strip().strip("[]")
        if not name:
            continue
        try:
            result.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            if any(c.isspace() or c in "/:@" for c in name) or len(name) > 253:
                raise ValidationError(
                    f"invalid host name for the server certificate: {raw!r}"
                ) from None
            result.append(x509.DNSName(name.lower()))
    if not result:
        raise ValidationError("the server certificate needs at least one host name or address")
    return list(dict.fromkeys(result))


def _end_entity(
    ca_key: PrivateKey,
    ca_cert: x509.Certificate,
    subject: x509.Name,
    public: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
    now: float,
    lifetime_s: float,
    usage: x509.ObjectIdentifier,
) -> x509.CertificateBuilder:
    start, end = _window(now, lifetime_s)
    # Never outlive the CA: a chain with an expired issuer fails anyway, later and confusingly.
    end = min(end, ca_cert.not_valid_after_utc)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )


def make_server_cert(
    ca_key: PrivateKey,
    ca_cert: x509.Certificate,
    sans: Sequence[str],
    now: float,
    lifetime_s: float = SERVER_LIFETIME_S,
) -> tuple[PrivateKey, x509.Certificate]:
    names = parse_sans(sans)
    key = new_key()
    builder = _end_entity(
        ca_key,
        ca_cert,
        _name("hodei-server"),
        key.public_key(),
        now,
        lifetime_s,
        ExtendedKeyUsageOID.SERVER_AUTH,
    ).add_extension(x509.SubjectAlternativeName(names), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def make_csr(key: PrivateKey, common_name: str = "hodei-agent") -> bytes:
    """A PEM certificate signing request; the server replaces the subject with the worker id."""
    csr = x509.CertificateSigningRequestBuilder().subject_name(_name(common_name))
    return csr.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _csr_public_key(csr_pem: bytes) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey:
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError:
        raise ValidationError("the certificate request is not a PEM CSR") from None
    try:
        valid = csr.is_signature_valid
    except (ValueError, InvalidSignature):
        valid = False
    if not valid:
        raise ValidationError("the certificate request's signature is invalid")
    public = csr.public_key()
    if isinstance(public, ec.EllipticCurvePublicKey):
        if public.curve.key_size < 256:
            raise ValidationError("the certificate request's EC key is too small (< 256 bits)")
        return public
    if isinstance(public, rsa.RSAPublicKey):
        if public.key_size < 2048:
            raise ValidationError("the certificate request's RSA key is too small (< 2048 bits)")
        return public
    raise ValidationError("the certificate request's key must be EC (P-256 or larger) or RSA")


def sign_agent_csr(
    ca_key: PrivateKey,
    ca_cert: x509.Certificate,
    csr_pem: bytes,
    worker_id: str,
    now: float,
    lifetime_s: float,
) -> x509.Certificate:
    """A client certificate for `worker_id` on the CSR's key. Only the key is taken from the
    request: the subject (the identity) is the server's to decide."""
    if not worker_id or len(worker_id) > MAX_WORKER_ID:
        raise ValidationError("invalid worker id for a certificate")
    public = _csr_public_key(csr_pem)
    builder = _end_entity(
        ca_key,
        ca_cert,
        _name(worker_id),
        public,
        now,
        lifetime_s,
        ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    return builder.sign(ca_key, hashes.SHA256())


def cert_names(cert: x509.Certificate) -> set[str]:
    """The host names and IP addresses a server certificate is valid for."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return set()
    names = {str(n) for n in ext.value.get_values_for_type(x509.DNSName)}
    return names | {str(ip) for ip in ext.value.get_values_for_type(x509.IPAddress)}


def cert_info(cert: x509.Certificate) -> CertInfo:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    worker_id = str(names[0].value) if names else ""
    return CertInfo(
        worker_id=worker_id,
        serial=serial_hex(cert.serial_number),
        not_before=cert.not_valid_before_utc.timestamp(),
        not_after=cert.not_valid_after_utc.timestamp(),
    )


def issued_by(cert: x509.Certificate, ca_cert: x509.Certificate) -> bool:
    """True when `ca_cert`'s key signed `cert` (the check TLS makes on a chain)."""
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def renew_at(not_before: float, not_after: float) -> float:
    """When an agent should renew: 2/3 into its certificate's life, leaving a third for retries.

    `not_before` is back-dated by BACKDATE_S, which is not life the agent has: count from the
    real issue time."""
    issued = min(not_before + BACKDATE_S, not_after)
    return issued + (not_after - issued) * RENEW_FRACTION
