"""Signed policy revisions on disk and their atomic activation.

Layout under ``<data_dir>/policy``::

    revisions/<n>/        a copy of the bundle with .manifest revision "<n>" and .signatures.json
    active -> revisions/<n>
    previous -> revisions/<m>   the last good revision before it

``activate`` refuses a bundle that fails ``check`` or its own tests; otherwise it copies it as
the next revision, signs it (``.signatures.json`` in OPA's shape: a JWS, here alg ``Ed25519``
(RFC 9864), over the SHA-256 of every file), verifies the copy as the loader will, records
``policy.activated`` in the audit log, and swaps the ``active`` link with one ``rename`` (atomic
on POSIX). Nothing else is touched on a refusal: the running policy stays. ``load_active``
verifies the signature and every file hash before a bundle is used; a mismatch is refused.

The audit entry is written in the caller's transaction before the swap; if the swap fails the
transaction rolls back, so there is no entry for an activation that did not happen.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import OKPKey
from sqlmodel import Session

from broker.audit.events import AuditEvent, AuditSink
from broker.errors import BrokerError, ConfigurationError
from broker.keys.files import load_ed25519_key
from broker.kit.clock import Clock
from broker.policy.bundle import MANIFEST, SIGNATURES, Bundle, load_bundle
from broker.policy.check import CheckReport, check_bundle
from broker.policy.errors import NoActivePolicy, PolicySignatureError
from broker.policy.testing import TestReport, run_tests
from broker.rego.engine import EmbeddedEngine
from broker.settings import Settings

SIGNING_ALG = "Ed25519"
KEY_ID = "policy-signing"


def signing_key_path(settings: Settings) -> Path:
    return settings.keys_dir / "policy-signing.key"


def verify_key_path(settings: Settings) -> Path:
    return settings.keys_dir / "policy-signing.pub"


def signing_key_pem(settings: Settings) -> bytes:
    """The policy signing key (PEM), created (0600, public key beside it) on first use."""
    settings.keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = load_ed25519_key(
        settings, signing_key_path(settings), verify_key_path(settings), "policy signing key"
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _files_claim(bundle: Bundle) -> list[dict[str, str]]:
    return [
        {"name": name, "hash": digest, "algorithm": "SHA-256"}
        for name, digest in bundle.file_hashes().items()
    ]


def bundle_digest(bundle: Bundle) -> str:
    """One SHA-256 over the sorted file list and hashes: names a revision's content."""
    text = json.dumps(_files_claim(bundle), sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def sign_bundle(bundle: Bundle, private_pem: bytes) -> str:
    payload = json.dumps(
        {"files": _files_claim(bundle), "revision": bundle.revision, "keyid": KEY_ID},
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    key = OKPKey.import_key(private_pem)
    return jws.serialize_compact(
        {"alg": SIGNING_ALG, "kid": KEY_ID}, payload, key, algorithms=[SIGNING_ALG]
    )


def verify_bundle(bundle: Bundle, public_pem: bytes) -> dict[str, Any]:
    """Check ``.signatures.json`` against the key and every file's hash; return the claims."""
    sig_path = bundle.root / SIGNATURES
    if not sig_path.is_file():
        raise PolicySignatureError(f"{bundle.root}: not signed (no {SIGNATURES})")
    try:
        tokens = json.loads(sig_path.read_text())["signatures"]
        if not isinstance(tokens, list) or len(tokens) != 1:
            raise ValueError("want exactly one signature")
        verified = jws.deserialize_compact(
            tokens[0], OKPKey.import_key(public_pem), algorithms=[SIGNING_ALG]
        )
        claims = json.loads(verified.payload)
    except (JoseError, ValueError, KeyError, TypeError) as exc:
        raise PolicySignatureError(f"{bundle.root}: the signature does not verify: {exc}") from exc
    signed = {f["name"]: f["hash"] for f in claims.get("files", [])}
    actual = bundle.file_hashes()
    changed = sorted(n for n in set(signed) | set(actual) if signed.get(n) != actual.get(n))
    if changed:
        raise PolicySignatureError(
            f"{bundle.root}: files differ from the signed revision: {', '.join(changed)}"
        )
    if str(claims.get("revision")) != bundle.revision:
        raise PolicySignatureError(f"{bundle.root}: the manifest's revision is not the signed one")
    return dict(claims)


@dataclass(frozen=True)
class Activation:
    revision: str
    previous: str | None
    digest: str
    path: Path
    tests_passed: int
    coverage_percent: float


class PolicyRejected(BrokerError):
    """The candidate bundle failed its check or its tests: it was not activated."""

    status_code = 422

    def __init__(self, message: str, check: CheckReport | None, tests: TestReport | None) -> None:
        super().__init__(message)
        self.check = check
        self.tests = tests


class PolicyStore:
    def __init__(self, settings: Settings, audit: AuditSink, clock: Clock) -> None:
        self.settings = settings
        self.root = settings.data_dir / "policy"
        self.audit = audit
        self.clock = clock

    @property
    def active_link(self) -> Path:
        return self.root / "active"

    @property
    def previous_link(self) -> Path:
        return self.root / "previous"

    def active_revision(self) -> str | None:
        if not self.active_link.is_symlink():
            return None
        return Path(os.readlink(self.active_link)).name

    def load_active(self) -> Bundle:
        if not self.active_link.exists():
            raise NoActivePolicy(
                "no policy is active; run `broker policy activate policies/` "
                "(every release is denied until one is)"
            )
        bundle = load_bundle(self.active_link.resolve())
        verify_bundle(bundle, self._public_pem())
        return bundle

    def _public_pem(self) -> bytes:
        path = verify_key_path(self.settings)
        if not path.is_file():
            raise ConfigurationError(f"policy verification key {path} is missing")
        return path.read_bytes()

    def _next_revision(self) -> int:
        revisions = self.root / "revisions"
        numbers = (
            [int(p.name) for p in revisions.iterdir() if p.name.isdigit()]
            if revisions.is_dir()
            else []
        )
        return max(numbers, default=0) + 1

    def activate(self, source: Path, session: Session, actor: str) -> Activation:
        """Check, test, copy, sign, verify, audit and swap in one go (see the module doc)."""
        candidate = load_bundle(source)
        report = check_bundle(candidate)
        if not report.ok:
            first = "; ".join(str(p) for p in report.problems[:3])
            raise PolicyRejected(
                f"{source} fails policy check ({len(report.problems)} problems): {first}",
                report,
                None,
            )
        tests = run_tests(candidate)
        if not tests.ok:
            failing = [f"{r.package}.{r.name}" for r in tests.results if r.outcome != "pass"]
            detail = ", ".join(failing[:5]) if failing else "the bundle has no tests"
            raise PolicyRejected(f"{source} fails its tests: {detail}", report, tests)
        private_pem = signing_key_pem(self.settings)
        number = self._next_revision()
        revisions = self.root / "revisions"
        revisions.mkdir(parents=True, exist_ok=True, mode=0o700)
        staging = revisions / f".staging-{number}"
        if staging.exists():
            shutil.rmtree(staging)
        final = revisions / str(number)
        try:
            for name, data in candidate.files.items():
                target = staging / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            manifest = dict(candidate.manifest)
            manifest["revision"] = str(number)
            (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
            signed = load_bundle(staging)
            signature = sign_bundle(signed, private_pem)
            (staging / SIGNATURES).write_text(json.dumps({"signatures": [signature]}) + "\n")
            verify_bundle(load_bundle(staging), self._public_pem())
            EmbeddedEngine.build(signed.policies(), signed.data)
            os.rename(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        previous = self.active_revision()
        activation = Activation(
            str(number),
            previous,
            bundle_digest(signed),
            final,
            tests.passed,
            tests.coverage_percent(),
        )
        self.audit.record(
            session,
            [
                AuditEvent(
                    "policy.activated",
                    actor,
                    None,
                    {
                        "revision": activation.revision,
                        "previous": previous,
                        "digest": activation.digest,
                        "tests_passed": tests.passed,
                    },
                )
            ],
        )
        self._swap(final, previous)
        return activation

    def _swap(self, final: Path, previous: str | None) -> None:
        if previous is not None:
            self._point(self.previous_link, Path("revisions") / previous)
        self._point(self.active_link, Path("revisions") / final.name)

    def _point(self, link: Path, target: Path) -> None:
        temp = link.with_name(f".{link.name}.tmp")
        if temp.is_symlink() or temp.exists():
            temp.unlink()
        os.symlink(target, temp)
        os.replace(temp, link)

    def revisions(self) -> list[dict[str, Any]]:
        revisions = self.root / "revisions"
        if not revisions.is_dir():
            return []
        active = self.active_revision()
        out = []
        for path in sorted(
            (p for p in revisions.iterdir() if p.name.isdigit()), key=lambda p: int(p.name)
        ):
            bundle = load_bundle(path)
            out.append(
                {
                    "revision": path.name,
                    "active": path.name == active,
                    "digest": bundle_digest(bundle),
                }
            )
        return out
