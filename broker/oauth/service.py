"""The token endpoint's OAuth 2.0 logic on authlib, with what authlib lacks added HERE only.

authlib 1.9 gives the client-credentials grant, RFC 6749 error shapes and RFC 7523 client
assertions, but neither mutual-TLS client authentication nor certificate-bound tokens. This
module adds both, in one place:

- ``tls_client_auth`` (RFC 8705 §2.1): a client-auth method registered on
  ``BrokerAuthorizationServer``; the certificate the TLS layer verified must have been issued to
  the registered recipient named by ``client_id`` (its CN) with the CA role of its kind.
- ``private_key_jwt`` (RFC 7523): authlib's ``JWTBearerClientAssertion`` with the recipient's
  registered keys, ``aud`` = the token endpoint, ``exp`` at most ``assertion_max_s`` ahead and
  each ``jti`` kept in table ``oauth_jti`` until it expires; a replay is ``invalid_client``.
  The connection is mutual TLS too, and its certificate must be the same recipient's.
- Bound tokens (RFC 8705 §3): the token generator puts ``cnf.x5t#S256`` of the certificate
  presented at the token endpoint into the token (``broker.oauth.tokens``).

A server object lives for one request: it holds that request's database session and peer, so
authlib's callbacks (which get neither) can reach them. Only ``client_credentials`` is served.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, ClassVar

from authlib.oauth2.rfc6749 import (  # type: ignore[import-untyped]
    AuthorizationServer,
    ClientMixin,
    InvalidClientError,
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    OAuth2Error,
    OAuth2Request,
    UnsupportedGrantTypeError,
)
from authlib.oauth2.rfc6749.grants import ClientCredentialsGrant  # type: ignore[import-untyped]
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload  # type: ignore[import-untyped]
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion  # type: ignore[import-untyped]
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from broker.audit.events import AuditEvent, AuditSink
from broker.ca.peer import Peer
from broker.kit.clock import Clock, to_us
from broker.oauth import scopes
from broker.oauth.errors import InvalidGrant
from broker.oauth.grant import redeem
from broker.oauth.models import UsedAssertion
from broker.oauth.settings import OAuthSettings
from broker.oauth.tokens import TokenCodec, thumbprint
from broker.recipients.models import Kind, Recipient, RecipientKey, Status
from broker.recipients.service import ca_role, purposes_of

AUTH_METHODS = ("private_key_jwt", "tls_client_auth")
ASSERTION_ALGS = ["ES256", "PS256", "RS256", "Ed25519"]
"""Asymmetric only: an assertion signed with HS256 (a shared secret) is never accepted."""
Response = tuple[int, dict[str, Any], list[tuple[str, str]]]


class OAuthClient(ClientMixin):  # type: ignore[misc]
    """A registered recipient as authlib sees a client."""

    def __init__(self, recipient: Recipient) -> None:
        self.recipient = recipient
        self.client_id = recipient.recipient_id
        self.permitted = scopes.permitted(Kind(recipient.kind), purposes_of(recipient))

    def get_client_id(self) -> str:
        return self.client_id

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return endpoint == "token" and method in AUTH_METHODS

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "client_credentials"


class TokenRequest(OAuth2Request):  # type: ignore[misc]
    """A token request whose form was read (within its size bound) by the web layer."""

    def __init__(self, uri: str, headers: dict[str, str], form: dict[str, str]) -> None:
        super().__init__("POST", uri, headers=headers)
        self.payload = BasicOAuth2Payload(form)
        self._form = form

    @property
    def form(self) -> dict[str, str]:
        return self._form


class ClientCredentials(ClientCredentialsGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = list(AUTH_METHODS)

    def validate_requested_scope(self) -> None:
        """Deny by default: every scope must be named, and permitted to this client."""
        requested = scopes.split(self.request.payload.scope)
        if not requested:
            raise InvalidScopeError("name the scopes you need; none is granted by default")
        denied = [s for s in requested if s not in self.client.permitted]
        if denied:
            raise InvalidScopeError(f"not permitted to {self.client.client_id}: {' '.join(denied)}")


def _check_certificate(client: OAuthClient, peer: Peer) -> OAuthClient:
    role = ca_role(client.recipient)
    if peer.name != client.client_id or peer.role != role:
        raise InvalidClientError(
            description=f"the TLS client certificate ({peer.name}, role {peer.role}) is not "
            f"one of {client.client_id} (role {role})"
        )
    return client


class PrivateKeyJwt(JWTBearerClientAssertion):  # type: ignore[misc]
    CLIENT_AUTH_METHOD = "private_key_jwt"

    def __init__(self, session: Session, settings: OAuthSettings, clock: Clock) -> None:
        super().__init__(validate_jti=True, leeway=30)
        self._session, self._settings, self._clock = session, settings, clock

    def get_audiences(self) -> list[str]:
        return [self._settings.token_endpoint]

    def resolve_client_public_key(self, client: OAuthClient) -> KeySet:
        query = select(RecipientKey).where(RecipientKey.recipient_id == client.client_id)
        rows = list(self._session.exec(query))
        if not rows:
            raise InvalidClientError(description=f"{client.client_id} has registered no keys")
        return KeySet.import_key_set({"keys": [json.loads(row.jwk) for row in rows]})

    def process_assertion_claims(self, assertion: str, resolve_key: Any) -> Any:
        try:
            token = jwt.decode(assertion, resolve_key, algorithms=ASSERTION_ALGS)
        except (JoseError, ValueError) as exc:
            raise InvalidClientError(description=f"the assertion does not verify: {exc}") from None
        self.verify_claims(token.claims)
        return token.claims

    def verify_claims(self, claims: Any) -> None:
        exp = claims.get("exp")
        latest = self._clock.now().timestamp() + self._settings.assertion_max_s + self.leeway
        if isinstance(exp, int | float) and exp > latest:  # a float exp is no way around it
            raise InvalidClientError(
                description=f"the assertion's exp is more than "
                f"{self._settings.assertion_max_s} s ahead"
            )
        jti = claims.get("jti")
        if jti is not None and (not isinstance(jti, str) or not 0 < len(jti) <= 200):
            raise InvalidClientError(description="the assertion's jti must be 1-200 characters")
        super().verify_claims(claims)

    def validate_jti(self, claims: Any, jti: str) -> bool:
        """Keep the jti until the assertion expires; False if it was seen before."""
        now_us = to_us(self._clock.now())
        digest = hashlib.sha256(f"{claims['sub']}\0{jti}".encode()).hexdigest()
        self._session.execute(delete(UsedAssertion).where(col(UsedAssertion.expires_us) < now_us))
        if self._session.get(UsedAssertion, digest) is not None:
            return False
        row = UsedAssertion(
            digest=digest, client_id=claims["sub"], expires_us=claims["exp"] * 10**6
        )
        try:
            with self._session.begin_nested():
                self._session.add(row)
        except IntegrityError:  # a concurrent request took it first
            return False
        return True


class BrokerAuthorizationServer(AuthorizationServer):  # type: ignore[misc]
    """authlib's server for one token request over one mutual-TLS connection."""

    def __init__(
        self,
        session: Session,
        peer: Peer,
        codec: TokenCodec,
        settings: OAuthSettings,
        clock: Clock,
        audit: AuditSink,
    ) -> None:
        super().__init__()
        self._session, self._peer, self._codec, self._audit = session, peer, codec, audit
        self._clock = clock
        self.register_grant(ClientCredentials)
        self.register_token_generator("default", self._generate)
        self.register_client_auth_method("tls_client_auth", self._tls_client_auth)
        assertion = PrivateKeyJwt(session, settings, clock)
        self.register_client_auth_method(
            "private_key_jwt", lambda query, request: self._assertion(assertion, query, request)
        )

    def query_client(self, client_id: str) -> OAuthClient:
        recipient = self._session.get(Recipient, client_id)
        if recipient is None:
            raise InvalidClientError(description=f"no registered client {client_id!r}")
        if recipient.status != Status.active:
            raise InvalidClientError(description=f"client {client_id} is {recipient.status}")
        return OAuthClient(recipient)

    def _tls_client_auth(self, query: Any, request: TokenRequest) -> OAuthClient | None:
        if "client_assertion" in request.form or "client_assertion_type" in request.form:
            return None
        client_id = request.form.get("client_id")
        if not client_id:
            raise InvalidClientError(
                description="name the client: client_id (tls_client_auth) or a "
                "client_assertion (private_key_jwt)"
            )
        return _check_certificate(query(client_id), self._peer)

    def _assertion(
        self, assertion: PrivateKeyJwt, query: Any, request: TokenRequest
    ) -> OAuthClient | None:
        if "client_assertion" in request.form and not request.form.get("client_assertion_type"):
            raise InvalidClientError(description="client_assertion_type is missing")
        client: OAuthClient | None = assertion(query, request)
        if client is None:
            return None
        named = request.form.get("client_id")
        if named is not None and named != client.client_id:
            raise InvalidClientError(description="client_id differs from the assertion's sub")
        return _check_certificate(client, self._peer)

    def _generate(self, client: OAuthClient, scope: str, **_: Any) -> dict[str, Any]:
        return self._codec.issue(
            client.client_id, scopes.split(scope), thumbprint(self._peer.fingerprint)
        )

    def save_token(self, token: dict[str, Any], request: TokenRequest) -> None:
        details = {
            "recipient": request.client.client_id,
            "scope": token["scope"],
            "method": request.auth_method,
            "certificate": self._peer.serial,
            "expires_in": token["expires_in"],
        }
        event = AuditEvent("oauth.token_issued", f"cert:{self._peer.name}", None, details)
        self._audit.record(self._session, [event])

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        """authlib's hook for framework signals; nothing listens here."""

    def create_oauth2_request(self, request: TokenRequest) -> TokenRequest:
        return request  # already built from the web layer's form by ``token_response``

    def handle_response(
        self, status: int, body: dict[str, Any], headers: list[tuple[str, str]]
    ) -> Response:
        return status, body, headers

    def token_response(self, uri: str, form: dict[str, str]) -> Response:
        """The answer to a token request (success or an RFC 6749 §5.2 error)."""
        request = TokenRequest(uri, {}, form)
        if not form.get("grant_type"):
            return self._error(request, InvalidRequestError("grant_type is required"))
        if form["grant_type"] == "authorization_code":
            return self._code_response(request, form)
        if form["grant_type"] != ClientCredentials.GRANT_TYPE:
            unsupported = UnsupportedGrantTypeError(form["grant_type"])
            unsupported.description = "grant_type must be client_credentials or authorization_code"
            return self._error(request, unsupported)
        try:
            response: Response = self.create_token_response(request)
        except OAuth2Error as error:  # raised outside authlib's own try (query_client)
            return self._error(request, error)
        return response

    def _code_response(self, request: TokenRequest, form: dict[str, str]) -> Response:
        """The authorization-code grant (RFC 6749 §4.1.3, PKCE RFC 7636): the client, authenticated
        as for client credentials, redeems the code the customer's consent page issued, once,
        with its verifier; the token is bound to the certificate, may read and write the
        client's feeds, and is narrowed to the consent (``consent:<id>``): every release it
        makes stays within the customer's choice (``broker.release.bounds``)."""
        try:
            client: OAuthClient = self.authenticate_client(request, list(AUTH_METHODS))
            request.client = client
            request.auth_method = (
                "tls_client_auth" if "client_assertion" not in form else "private_key_jwt"
            )
            if "feeds:read" not in client.permitted:
                raise InvalidScopeError(description=f"{client.client_id} may not read feeds")
            redeemed = redeem(
                self._session,
                self._clock,
                form.get("code", ""),
                client.client_id,
                form.get("redirect_uri", ""),
                form.get("code_verifier", ""),
            )
        except OAuth2Error as error:
            return self._error(request, error)
        except InvalidGrant as exc:
            return self._error(request, InvalidGrantError(description=exc.message))
        granted = [s for s in scopes.CODE_FLOW_SCOPES if s in client.permitted]
        token = self._codec.issue(
            client.client_id,
            [*granted, scopes.CONSENT_PREFIX + redeemed.consent_id],
            thumbprint(self._peer.fingerprint),
        )
        self.save_token(token, request)
        return 200, token, [("Content-Type", "application/json")]

    def _error(self, request: TokenRequest, error: OAuth2Error) -> Response:
        answer: Response = self.handle_error_response(request, error)
        return answer
