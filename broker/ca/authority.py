"""The private certificate authority behind every mutual-TLS link (C1.2, C2.1, C3.2, C4.2).

An ECDSA P-256 root in ``<data_dir>/ca`` issues certificates that carry their holder's role
(SAN URI ``urn:x1332:role:<role>`` and subject OU), keeps each issued certificate in table
``ca_certificate``, and publishes revocations as a signed CRL (``ca/crl.pem``). Every issue and
revocation is an audit event.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sqlmodel import Session, col, select

from broker.audit.events import AuditEvent, AuditSink
from broker.ca.models import IssuedCertificate
from broker.errors import BrokerError, ConfigurationError, NotFound
from broker.keys.files import read_secret_file, write_secret_file
from broker.kit.clock import Clock, from_us, to_us
from broker.settings import Settings

ROLES = ("mdms", "concentrator", "third-party", "ems", "broker", "regulator", "operator")
"""``operator``: a person or tool of the utility that manages the recipient registry over the
API. ``broker`` is the server's own identity (its listeners and the client certificate of its
pushes) and manages nothing: a webhook aimed back at the API cannot act with it."""
ROLE_URI = "urn:x1332:role:"
CRL_VALIDITY = timedelta(days=30)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class CAError(BrokerError):
    """The CA cannot do what was asked (bad CSR, unknown role, name taken...)."""


@dataclass(frozen=True)
class Issued:
    serial: str
    name: str
    role: str
    cert_path: Path
    key_path: Path | None


def fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def role_of(cert: x509.Certificate) -> str | None:
    """The role a certificate of this CA carries, or None."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        if uri.startswith(ROLE_URI) and uri[len(ROLE_URI) :] in ROLES:
            return uri[len(ROLE_URI) :]
    return None


def common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


class CertificateAuthority:
    def __init__(self, settings: Settings, clock: Clock) -> None:
        self.dir = settings.ca_dir
        self._clock = clock
        key_path, cert_path = self.dir / "ca.key", self.dir / "ca.pem"
        if not cert_path.exists():
            raise ConfigurationError(f"no CA in {self.dir}; run `broker ca init` first")
        try:
            key = serialization.load_pem_private_key(
                read_secret_file(settings, key_path), password=None
            )
            self.cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        except ValueError as exc:
            raise ConfigurationError(f"the CA in {self.dir} is damaged: {exc}") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey) or (
            key.public_key().public_numbers() != self.cert.public_key().public_numbers()  # type: ignore[union-attr]
        ):
            raise ConfigurationError(f"the CA key in {key_path} does not match ca.pem")
        self._key = key

    @property
    def cert_path(self) -> Path:
        return self.dir / "ca.pem"

    @property
    def crl_path(self) -> Path:
        return self.dir / "crl.pem"

    @classmethod
    def create(
        cls, settings: Settings, clock: Clock, name: str = "Smart-Meter Broker CA"
    ) -> CertificateAuthority:
        """Create the root key and certificate (``broker ca init``); refuses to overwrite."""
        if (settings.ca_dir / "ca.pem").exists():
            raise CAError(f"a CA already exists in {settings.ca_dir}; refusing to overwrite it")
        settings.ca_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = ec.generate_private_key(ec.SECP256R1())
        now = clock.now()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_usage(cert_sign=True), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_secret_file(settings.ca_dir / "ca.key", pem)
        (settings.ca_dir / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        ca = cls(settings, clock)
        ca.write_crl([])
        return ca

    # ---- issuing -----------------------------------------------------------------------------

    def issue(
        self,
        session: Session,
        audit: AuditSink,
        *,
        role: str,
        name: str,
        actor: str,
        csr_pem: bytes | None = None,
        days: int = 365,
        dns: Sequence[str] = (),
        ips: Sequence[str] = (),
    ) -> Issued:
        _check_request(role, name, days)
        key: ec.EllipticCurvePrivateKey | None = None
        if csr_pem is None:
            key = ec.generate_private_key(ec.SECP256R1())
            public = key.public_key()
        else:
            public = _public_key_of_csr(csr_pem)
        cert = self._sign(public, role, name, days, dns, ips)
        issued = self._store(session, cert, role, name, key)
        details = {
            "serial": issued.serial,
            "name": name,
            "role": role,
            "days": days,
            "csr": csr_pem is not None,
        }
        audit.record(session, [AuditEvent("ca.certificate_issued", actor, None, details)])
        return issued

    def _sign(
        self,
        public: ec.EllipticCurvePublicKey,
        role: str,
        name: str,
        days: int,
        dns: Sequence[str],
        ips: Sequence[str],
    ) -> x509.Certificate:
        now = self._clock.now()
        if role == "broker" and not dns and not ips:
            dns, ips = ("localhost",), ("127.0.0.1", "::1")
        alt: list[x509.GeneralName] = [x509.UniformResourceIdentifier(ROLE_URI + role)]
        alt += [x509.DNSName(d) for d in dns]
        alt += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
        if role in ("broker", "mdms"):
            usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
                x509.NameAttribute(NameOID.COMMON_NAME, name),
            ]
        )
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.cert.public_key()),  # type: ignore[arg-type]
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )

    def _store(
        self,
        session: Session,
        cert: x509.Certificate,
        role: str,
        name: str,
        key: ec.EllipticCurvePrivateKey | None,
    ) -> Issued:
        serial = format(cert.serial_number, "x")
        session.add(
            IssuedCertificate(
                serial=serial,
                name=name,
                role=role,
                fingerprint_sha256=fingerprint(cert),
                not_before_us=to_us(cert.not_valid_before_utc),
                not_after_us=to_us(cert.not_valid_after_utc),
                issued_us=to_us(self._clock.now()),
                pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
            )
        )
        session.flush()
        issued_dir = self.dir / "issued"
        issued_dir.mkdir(exist_ok=True)
        cert_path, key_path = issued_dir / f"{name}.pem", None
        if key is not None:
            key_path = issued_dir / f"{name}.key"
            key_path.unlink(missing_ok=True)  # a re-issue for the same name replaces the key
            write_secret_file(
                key_path,
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                ),
            )
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return Issued(serial, name, role, cert_path, key_path)

    # ---- revocation --------------------------------------------------------------------------

    def revoke(
        self,
        session: Session,
        audit: AuditSink,
        *,
        actor: str,
        serial: str | None = None,
        name: str | None = None,
        reason: str = "unspecified",
    ) -> list[str]:
        """Revoke one certificate by serial, or every live one of a name; rewrites the CRL."""
        query = select(IssuedCertificate).where(col(IssuedCertificate.revoked_us).is_(None))
        if serial is not None:
            query = query.where(IssuedCertificate.serial == serial.lower().removeprefix("0x"))
        elif name is not None:
            query = query.where(IssuedCertificate.name == name)
        else:
            raise CAError("name a certificate to revoke: --serial or --name")
        rows = list(session.exec(query))
        if not rows:
            raise NotFound(
                f"no unrevoked certificate with {f'serial {serial}' if serial else f'name {name}'}"
            )
        now = to_us(self._clock.now())
        for row in rows:
            row.revoked_us, row.revocation_reason = now, reason
            session.add(row)
        session.flush()
        serials = [row.serial for row in rows]
        details = {"serials": serials, "reason": reason}
        audit.record(session, [AuditEvent("ca.certificate_revoked", actor, None, details)])
        self.refresh_crl(session)
        return serials

    def revoked(self, session: Session) -> list[IssuedCertificate]:
        query = select(IssuedCertificate).where(col(IssuedCertificate.revoked_us).is_not(None))
        return list(session.exec(query))

    def refresh_crl(self, session: Session) -> Path:
        """Rewrite ``crl.pem`` from the database (fresh nextUpdate)."""
        return self.write_crl(self.revoked(session))

    def _previous_crl(self) -> x509.CertificateRevocationList | None:
        try:
            return x509.load_pem_x509_crl(self.crl_path.read_bytes())
        except (OSError, ValueError):
            return None

    def write_crl(self, revoked: Sequence[IssuedCertificate]) -> Path:
        """Sign a CRL listing ``revoked``. Each CRL is strictly newer (lastUpdate, CRL number)
        than the one before: TLS stacks that hold several CRLs of an issuer pick the newest."""
        now = self._clock.now()
        last_update, number = now - timedelta(minutes=5), 1
        previous = self._previous_crl()
        if previous is not None:
            newer = previous.last_update_utc + timedelta(seconds=1)
            # never in the future (a bursty revoker ties at worst; the per-request check holds)
            last_update = min(max(last_update, newer), now - timedelta(minutes=1))
            with contextlib.suppress(x509.ExtensionNotFound):
                crl_number = previous.extensions.get_extension_for_class(x509.CRLNumber)
                number = crl_number.value.crl_number + 1
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject)
            .last_update(last_update)
            .next_update(now + CRL_VALIDITY)
            .add_extension(x509.CRLNumber(number), critical=False)
        )
        for row in revoked:
            assert row.revoked_us is not None
            entry = (
                x509.RevokedCertificateBuilder()
                .serial_number(int(row.serial, 16))
                .revocation_date(from_us(row.revoked_us))
                .build()
            )
            builder = builder.add_revoked_certificate(entry)
        crl = builder.sign(self._key, hashes.SHA256())
        tmp = self.crl_path.with_suffix(".tmp")
        tmp.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
        tmp.replace(self.crl_path)
        return self.crl_path

    def certificates(self, session: Session) -> list[IssuedCertificate]:
        return list(session.exec(select(IssuedCertificate).order_by(col(IssuedCertificate.name))))


def _usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=not cert_sign,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _check_request(role: str, name: str, days: int) -> None:
    if role not in ROLES:
        raise CAError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    if not _NAME.match(name):
        raise CAError(f"invalid name {name!r}: letters, digits, '.', '_' and '-' only")
    if not 1 <= days <= 825:
        raise CAError("--days must be between 1 and 825")


def _public_key_of_csr(csr_pem: bytes) -> ec.EllipticCurvePublicKey:
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as exc:
        raise CAError(f"the CSR is not a PEM certificate signing request: {exc}") from exc
    if not csr.is_signature_valid:
        raise CAError("the CSR's signature does not verify: it was forged or damaged")
    public = csr.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise CAError("the CSR must carry an EC (P-256) public key")
    return public
