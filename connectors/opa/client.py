"""The policy engine on an OPA server (``policy_engine = "opa"``), for deployments that run OPA as a
sidecar: the same ``PolicyEngine`` contract as the embedded engine, over OPA's REST API.

Why this module wraps ``opa-python-client`` rather than using it as it is: its session verifies
TLS against a yes/no flag only (no CA bundle, so a server certificate from the broker's private CA
could only be accepted by turning verification off), retries 500/502/504 on every method, follows
the environment's proxies and ``.netrc``, and on a refused module silently tries a Rego v0 -> v1
"upgrade". ``_Transport`` is the one place that fixes this: verification against the given CA
bundle (never off), a client certificate for mutual TLS, a bearer token, timeouts on every call,
retries only of connections that never reached the server, no redirects, no environment.

Failures fail closed the same way as the embedded engine's: anything but a readable answer is an
``EngineFailure`` naming the server (the decision point turns it into a deny with an audit entry);
a module or data document OPA refuses is a ``PolicyLoadError`` with OPA's own message, after the
modules (and the data, when this process loaded it) of the last load are put back. Evaluations
ask for ``strict-builtin-errors=true`` so a builtin error is an error, never a quietly undefined
rule.

How long a dead server costs a decision: a refused or timed-out connection is tried
``retries + 1`` times (``timeout_s`` each, ~0.1 s apart); a server that accepts and then stalls
costs ``timeout_s`` once per stalled read. A server that trickles bytes forever is bounded only
per read (``requests`` has no overall deadline).

Modules are stored on the server under ids ``<policy_prefix><module path>``; a load replaces the
modules under that prefix (whatever process loaded them) and leaves other ids alone. Each
top-level key of the data document is written at ``/v1/data/<key>``; keys written by this process
and gone from the new document are deleted. Loading is not atomic on the server: OPA's REST API
takes one module at a time, so decisions made during a load may see a mix of old and new modules.
"""

from __future__ import annotations

import ipaddress
import json
import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, NoReturn
from urllib.parse import quote, urlsplit

import requests
import urllib3
from opa_client import OpaClient
from opa_client.errors import DeletePolicyError, RegoParseError
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from broker.errors import ConfigurationError
from broker.rego.engine import UNDEFINED, EngineFailure, PolicyLoadError, rule_ref
from broker.settings import Settings

POLICY_PREFIX: Final = "smart-meter-broker/"
STRICT_BUILTIN_ERRORS: Final = {"strict-builtin-errors": "true"}
_REASON = re.compile(r"\[(?:Errno -?\d+|SSL: [A-Z0-9_]+)\] ([^'\"()]+)")
_ERRNO_TEXT = re.compile(r"\(-?\d+, '([^'(]+)")


class _NotOpa(Exception):
    """An answer that parses but has a shape OPA never gives."""


@dataclass(frozen=True)
class Endpoint:
    """Where the OPA server listens, checked: https, or http to a loopback address only."""

    url: str
    host: str
    port: int
    https: bool

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigurationError(f"OPA URL {url!r}: expected https://host[:port]")
        if parts.path not in ("", "/") or parts.query or parts.username:
            raise ConfigurationError(
                f"OPA URL {url!r}: give scheme, host and port only (OPA serves /v1 at the root)"
            )
        https = parts.scheme == "https"
        if not https and not _loopback(parts.hostname):
            raise ConfigurationError(
                f"OPA URL {url!r}: plain http is allowed to a loopback address only; "
                "use https (with the CA bundle that signed the server's certificate)"
            )
        try:
            port = parts.port or (443 if https else 80)
        except ValueError as exc:
            raise ConfigurationError(f"OPA URL {url!r}: {exc}") from exc
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        return cls(f"{parts.scheme}://{host}:{port}", host, port, https)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _existing(path: Path | None, what: str) -> str | None:
    if path is None:
        return None
    if not path.is_file():
        raise ConfigurationError(f"OPA {what} {path} does not exist or is not a file")
    return str(path)


def _tls_options(
    endpoint: Endpoint, ca_bundle: Path | None, cert: Path | None, key: Path | None
) -> tuple[str | bool, str | tuple[str, str] | None]:
    """``requests``' ``verify`` and ``cert`` for these settings, refusing what cannot work."""
    if not endpoint.https and (ca_bundle or cert):
        raise ConfigurationError(
            f"OPA at {endpoint.url}: a CA bundle or client certificate needs an https URL"
        )
    if key is not None and cert is None:
        raise ConfigurationError("an OPA client key was given without its client certificate")
    verify: str | bool = _existing(ca_bundle, "CA bundle") or True
    cert_file, key_file = _existing(cert, "client certificate"), _existing(key, "client key")
    if cert_file is None:
        return verify, None
    return verify, (cert_file, key_file) if key_file else cert_file


class _Transport(OpaClient):  # type: ignore[misc]  # opa-python-client ships no type hints
    """``OpaClient`` on a session the broker can trust (see the module docstring)."""

    def __init__(self, *, verify: str | bool, connect_retries: int, **kwargs: Any) -> None:
        self._verify = verify
        self._connect_retries = connect_retries
        super().__init__(**kwargs)

    def _init_session(self) -> requests.Session:
        session = requests.Session()
        session.trust_env = False  # no proxy, CA bundle or .netrc credentials from the environment
        session.max_redirects = 0
        session.verify = self._verify
        session.cert = self.cert
        session.headers.update(self.headers or {})
        retry = Retry(
            total=self._connect_retries,
            connect=self._connect_retries,
            read=0,
            status=0,
            other=0,
            redirect=0,
            backoff_factor=0.1,
            raise_on_status=False,
        )
        session.mount("https://", HTTPAdapter(max_retries=retry))
        session.mount("http://", HTTPAdapter(max_retries=retry))
        return session

    def policy_texts(self) -> dict[str, str]:
        """Every module on the server: id -> Rego text (``GET /v1/policies``)."""
        response = self._session.get(f"{self.root_url}/policies", timeout=self.timeout)
        response.raise_for_status()
        body = response.json()
        items = body.get("result") if isinstance(body, dict) else None
        if not isinstance(items, list) or not all(_is_policy(item) for item in items):
            raise _NotOpa("the policy list is not a list of policies")
        return {item["id"]: item.get("raw", "") for item in items}

    def put_document(self, key: str, body: str) -> requests.Response:
        response: requests.Response = self._session.put(
            f"{self.root_url}/data/{quote(key, safe='')}",
            data=body.encode(),
            headers={"Content-Type": "application/json"},
            timeout=self.timeout,
        )
        return response

    def delete_document(self, key: str) -> requests.Response:
        url = f"{self.root_url}/data/{quote(key, safe='')}"
        response: requests.Response = self._session.delete(url, timeout=self.timeout)
        return response


def _is_policy(item: object) -> bool:
    return isinstance(item, dict) and isinstance(item.get("id"), str)


class OpaServerEngine:
    """Rego evaluated by an OPA server; ``load`` pushes the modules and data, ``evaluate`` asks."""

    name = "opa"

    def __init__(
        self,
        url: str,
        ca_bundle: Path | None = None,
        client_cert: Path | None = None,
        client_key: Path | None = None,
        token: str | None = None,
        timeout_s: float = 1.0,
        retries: int = 1,
        policy_prefix: str = POLICY_PREFIX,
    ) -> None:
        self.endpoint = Endpoint.parse(url)
        if not policy_prefix:
            raise ConfigurationError("the OPA policy id prefix must not be empty")
        verify, cert = _tls_options(self.endpoint, ca_bundle, client_cert, client_key)
        self._client = _Transport(
            verify=verify,
            connect_retries=retries,
            host=self.endpoint.host,
            port=self.endpoint.port,
            ssl=self.endpoint.https,
            cert=cert,
            token=token,
            retries=retries,
            timeout=timeout_s,
        )
        self._timeout_s = timeout_s
        self._prefix = policy_prefix
        self._data: dict[str, Any] | None = None  # the data document of the last good load
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> OpaServerEngine:
        if not settings.opa_url:
            raise ConfigurationError("BROKER_POLICY_ENGINE=opa needs BROKER_OPA_URL")
        token = settings.opa_token.get_secret_value() if settings.opa_token else None
        return cls(
            settings.opa_url,
            settings.opa_ca_bundle,
            settings.opa_client_cert,
            settings.opa_client_key,
            token,
            settings.opa_timeout_s,
        )

    # ---- evaluate ----------------------------------------------------------------------------

    def evaluate(self, path: str, input_doc: Mapping[str, Any]) -> Any:
        ref = rule_ref(path)[len("data.") :]
        with self._talking(f"evaluating data.{ref}"):
            body = self._client.query_rule(dict(input_doc), ref, query_params=STRICT_BUILTIN_ERRORS)
            if not isinstance(body, dict):
                raise _NotOpa("the answer is not a JSON object")
        return body.get("result", UNDEFINED)

    def healthy(self) -> bool:
        """``GET /health``: the server is up and has activated its bundles and plugins."""
        return bool(self._client.check_health())

    def close(self) -> None:
        self._client.close_connection()

    # ---- load --------------------------------------------------------------------------------

    def load(self, modules: Mapping[str, str], data: Mapping[str, Any]) -> None:
        wanted = {self._prefix + path.lstrip("/"): text for path, text in modules.items()}
        with self._lock:
            before = self._ours()
            previous_data = self._data
            try:
                self._apply_modules(wanted, before)
                self._apply_data(data, previous_data or {})
            except PolicyLoadError as refused:
                self._restore(refused, before, previous_data, data)
                raise
            self._data = dict(data)

    def _ours(self) -> dict[str, str]:
        with self._talking("listing policies"):
            texts = self._client.policy_texts()
        return {pid: text for pid, text in texts.items() if pid.startswith(self._prefix)}

    def _apply_modules(self, wanted: Mapping[str, str], present: Mapping[str, str]) -> None:
        for pid in sorted(wanted):
            if present.get(pid) != wanted[pid]:
                self._put_policy(pid, wanted[pid])
        for pid in sorted(set(present) - set(wanted)):
            self._delete_policy(pid)

    def _apply_data(self, data: Mapping[str, Any], previous: Mapping[str, Any]) -> None:
        for key in sorted(data):
            self._put_data(key, data[key])
        for key in sorted(set(previous) - set(data)):
            with self._talking(f"deleting data.{key}"):
                response = self._client.delete_document(key)
            if response.status_code not in (204, 404):
                self._fail(response, f"deleting data.{key}")

    def _restore(
        self,
        refused: PolicyLoadError,
        before: Mapping[str, str],
        previous_data: Mapping[str, Any] | None,
        data: Mapping[str, Any],
    ) -> None:
        """Put back the modules (and, when this process loaded it, the data) of the last load."""
        try:
            self._apply_modules(before, self._ours())
            if previous_data is not None:
                self._apply_data(previous_data, data)
        except (PolicyLoadError, EngineFailure) as exc:
            raise EngineFailure(
                f"{refused.message}; putting the previous policy back on OPA at "
                f"{self.endpoint.url} failed too, it may hold part of the new load: {exc.message}"
            ) from exc

    def _put_policy(self, pid: str, text: str) -> None:
        try:
            with self._talking(f"loading {pid}"):
                self._client.update_policy_from_string(text, quote(pid), rego_compat=False)
        except RegoParseError as exc:
            self._refused(pid, exc.expression, _opa_detail(exc.message, exc.errors))

    def _delete_policy(self, pid: str) -> None:
        try:
            with self._talking(f"deleting {pid}"):
                self._client.delete_policy(quote(pid))
        except DeletePolicyError as exc:
            if exc.expression != "resource_not_found":
                self._refused(pid, exc.expression, str(exc.message))

    def _refused(self, pid: str, code: object, detail: str) -> NoReturn:
        where = f"OPA at {self.endpoint.url}"
        if code == "invalid_parameter":
            raise PolicyLoadError(f"{where} refused {pid}: {detail}")
        raise EngineFailure(f"{where} did not take {pid} ({code}): {detail}")

    def _put_data(self, key: str, value: Any) -> None:
        if not key or "/" in key:
            raise PolicyLoadError(f"data key {key!r} cannot be written through OPA's data API")
        try:
            body = json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise PolicyLoadError(f"data document refused: data.{key}: {exc}") from exc
        with self._talking(f"writing data.{key}"):
            response = self._client.put_document(key, body)
        if response.status_code in (400, 404):  # bad document, or a write conflict
            raise PolicyLoadError(
                f"OPA at {self.endpoint.url} refused data.{key}: {_answer_message(response)}"
            )
        if response.status_code != 204:
            self._fail(response, f"writing data.{key}")

    def _fail(self, response: requests.Response, what: str) -> NoReturn:
        raise EngineFailure(
            f"OPA at {self.endpoint.url} answered {response.status_code} while {what}: "
            f"{_answer_message(response)}"
        )

    # ---- transport errors --------------------------------------------------------------------

    @contextmanager
    def _talking(self, what: str) -> Iterator[None]:
        """Turn whatever ``requests`` raises into an ``EngineFailure`` naming the server."""
        where = f"OPA at {self.endpoint.url}"
        try:
            yield
        except requests.exceptions.SSLError as exc:
            raise EngineFailure(f"{where}: TLS failed while {what}: {_reason(exc)}") from exc
        except (requests.Timeout, requests.ConnectionError) as exc:
            if isinstance(exc, requests.Timeout) or _timed_out(exc):
                raise EngineFailure(
                    f"{where}: no answer within {self._timeout_s} s while {what}"
                ) from exc
            raise EngineFailure(f"{where}: cannot connect while {what}: {_reason(exc)}") from exc
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else "?"
            detail = _answer_message(exc.response) if exc.response is not None else str(exc)
            raise EngineFailure(f"{where} answered {status} while {what}: {detail}") from exc
        except requests.exceptions.JSONDecodeError as exc:
            raise EngineFailure(
                f"{where} answered something that is not JSON while {what}"
            ) from exc
        except requests.RequestException as exc:
            raise EngineFailure(f"{where}: request failed while {what}: {exc}") from exc
        except _NotOpa as exc:
            raise EngineFailure(f"{where} answered as OPA never does while {what}: {exc}") from exc


def _timed_out(exc: requests.ConnectionError) -> bool:
    """A read timeout in the TLS handshake reaches ``requests`` as a ConnectionError."""
    cause = exc.args[0] if exc.args else None
    return isinstance(getattr(cause, "reason", None), urllib3.exceptions.ReadTimeoutError)


def _reason(exc: Exception) -> str:
    """The operating system's or OpenSSL's words inside ``requests``' nested error text."""
    found = _REASON.search(str(exc)) or _ERRNO_TEXT.search(str(exc))
    return found.group(1).strip() if found else type(exc).__name__


def _answer_message(response: requests.Response) -> str:
    """OPA's ``message`` (and its ``errors``) from an error answer, else the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or "(empty body)"
    if isinstance(body, dict) and "message" in body:
        return _opa_detail(body["message"], body.get("errors"))
    return response.text[:200]


def _opa_detail(message: object, errors: object) -> str:
    details = [
        str(error.get("message", ""))
        for error in (errors if isinstance(errors, list) else [])
        if isinstance(error, dict)
    ]
    return "; ".join([str(message), *filter(None, details)])
