"""Portal sessions end on the server, and wrong passwords slow an account without locking it
(X.1332 C2.2, T7), over real TLS.

Sessions: a cookie kept from before sign-out, or from before a password change, is a signed-out
browser's (401, or the sign-in form). Sign-in throttling: after a few wrong passwords of one
account, or from one client address, each further attempt waits a growing, capped interval (429
with Retry-After, the password not even checked); the state is in the database, so another
portal process on it waits too; after the wait the right password signs in. The "stranger" is a
client bound to 127.0.0.2, the customer one at 127.0.0.1 (both reach the loopback listener)."""

from __future__ import annotations

import base64
import re
import ssl
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from broker.ca.authority import CertificateAuthority
from broker.customers.accounts import Accounts
from broker.kit.clock import Clock, FixedClock, SystemClock
from broker.portal.serve import running_portal
from broker.runtime.core import Runtime, init_keys, prepare_data_dir, upgrade_schema
from broker.settings import Mode
from tests.broker.fakes import settings_for
from tests.broker.parties import enrol

pytestmark = pytest.mark.timeout(90)
PASSWORDS = {
    "alice": "correct horse battery",
    "bob": "another long passphrase",
    "carol": "a third long passphrase",
}
CUSTOMERS = {"alice": "CUST-0000001", "bob": "CUST-0000002", "carol": "CUST-0000003"}
WRONG = "not the password at all"
STRANGER = "127.0.0.2"
MakeRt = Callable[..., Runtime]
UNEXPIRED = base64.urlsafe_b64encode(b"x|99999999999").decode()  # then a MAC to compare


@pytest.fixture
def make_rt(tmp_path: Path) -> Iterator[MakeRt]:
    """A runtime with the three accounts, ``clock`` and the portal settings given; the
    per-address token bucket is set high enough never to answer here."""
    opened: list[Runtime] = []

    def make(clock: Clock | None = None, **portal: object) -> Runtime:
        settings = settings_for(
            tmp_path / "var",
            Mode.production,
            portal_rate_per_s=1000.0,
            portal_burst=1000.0,
            **portal,
        )
        prepare_data_dir(settings)
        init_keys(settings)
        upgrade_schema(settings).dispose()
        CertificateAuthority.create(settings, SystemClock())
        rt = Runtime.open(settings, clock or SystemClock())
        opened.append(rt)
        accounts = Accounts(rt.audit, rt.clock, rt.hasher)
        with rt.db.transaction() as session:
            enrol(session, CUSTOMERS.values())
            for user, password in PASSWORDS.items():
                accounts.create(session, user, CUSTOMERS[user], password, "test")
        return rt

    yield make
    for rt in opened:
        rt.close()


@contextmanager
def _portal(rt: Runtime) -> Iterator[str]:
    with running_portal(rt, "test") as port:
        yield f"https://127.0.0.1:{port}"


def _browser(rt: Runtime, base: str, address: str = "127.0.0.1") -> httpx.Client:
    ca = ssl.create_default_context(cafile=str(rt.settings.ca_dir / "ca.pem"))
    transport = httpx.HTTPTransport(verify=ca, local_address=address)
    return httpx.Client(base_url=base, timeout=10, transport=transport)


def _sign_in(client: httpx.Client, user: str, password: str | None = None) -> httpx.Response:
    return client.post("/login", data={"username": user, "password": password or PASSWORDS[user]})


def _waits(response: httpx.Response, says: str) -> int:
    """The seconds a 429 page asks to wait (Retry-After), checking the page says why."""
    assert response.status_code == 429, response.text
    wait = int(response.headers["Retry-After"])
    assert wait >= 1 and says in response.text
    assert re.search(rf"Try again in {wait} seconds", response.text)
    return wait


def _signed_out(rt: Runtime, base: str, cookie: str) -> None:
    """A browser presenting only ``cookie`` is treated as signed out everywhere."""
    with _browser(rt, base) as replay:
        replay.cookies.set("broker_session", cookie)
        assert replay.get("/me/consents").status_code == 401
        assert replay.get("/me/access").status_code == 401
        home = replay.get("/me")
        assert home.status_code == 303 and home.headers["location"] == "/login"


def _change_password(client: httpx.Client, current: str, new: str) -> httpx.Response:
    form = client.get("/me/password")
    assert form.status_code == 200, form.text
    token = re.search(r'name=token value="([^"]+)"', form.text)
    assert token is not None
    data = {"current_password": current, "new_password": new, "token": token.group(1)}
    return client.post("/me/password", data=data)


def test_C2_2_a_cookie_kept_from_before_sign_out_is_signed_out(make_rt: MakeRt) -> None:
    """Sign-out ends the session on the server: the cookie a thief copied before it, replayed
    afterwards, reaches nothing."""
    rt = make_rt()
    with _portal(rt) as base, _browser(rt, base) as alice:
        assert _sign_in(alice, "alice").status_code == 303
        saved = alice.cookies["broker_session"]
        assert alice.get("/me/consents").status_code == 200
        out = alice.post("/logout")
        assert out.status_code == 303
        _signed_out(rt, base, saved)
        with _browser(rt, base) as again:  # signing in again works, with a new session
            assert _sign_in(again, "alice").status_code == 303
            assert again.cookies["broker_session"] != saved
            assert again.get("/me/consents").status_code == 200


GARBLED = [
    "AAAA.BBBB",
    "no-dot",
    "QUFBQQ.\u00e9\u00e9",
    "\u00e9.\u00e9",
    "...",
    UNEXPIRED + ".\u00e9",
]


def test_C2_2_a_forged_or_garbled_session_cookie_is_signed_out(make_rt: MakeRt) -> None:
    """Whatever the cookie holds (a forged MAC, no MAC, bytes outside ASCII), the answer is
    the signed-out one, never a server error; nor is a forged CSRF token outside ASCII (403)."""
    rt = make_rt()
    with _portal(rt) as base, _browser(rt, base) as browser:
        for cookie in GARBLED:
            header = {b"cookie": f"broker_session={cookie}".encode("latin-1")}
            assert browser.get("/me/consents", headers=header).status_code == 401, cookie
            home = browser.get("/me", headers=header)
            assert home.status_code == 303 and home.headers["location"] == "/login"
        assert _sign_in(browser, "alice").status_code == 303
        for token in ("stale", "\u00e9"):  # a consent form's CSRF token, forged
            form = {"query": "client_id=acme-energy", "token": token, "action": "approve"}
            assert browser.post("/oauth/authorize/decision", data=form).status_code == 403


def test_C2_2_a_password_change_ends_every_session_of_the_customer(make_rt: MakeRt) -> None:
    """The customer changes their password in one browser: their sessions elsewhere (and the
    one this browser had) end, this browser gets a new one, another customer's is untouched;
    the old password no longer signs in. A wrong current password, a short new one or a stale
    form change nothing."""
    rt = make_rt()
    new = "a brand new long password"
    with (
        _portal(rt) as base,
        _browser(rt, base) as here,
        _browser(rt, base) as there,
        _browser(rt, base) as bob,
    ):
        for client, user in ((here, "alice"), (there, "alice"), (bob, "bob")):
            assert _sign_in(client, user).status_code == 303
        before = here.cookies["broker_session"]
        wrong = _change_password(here, WRONG, new)
        assert wrong.status_code == 401 and "current password" in wrong.text
        short = _change_password(here, PASSWORDS["alice"], "short")
        assert short.status_code == 422 and "12 characters" in short.text
        for forged in ("x", "\u00e9"):
            stale = here.post(
                "/me/password",
                data={"current_password": PASSWORDS["alice"], "new_password": new, "token": forged},
            )
            assert stale.status_code == 403
        assert there.get("/me/consents").status_code == 200  # nothing changed yet
        changed = _change_password(here, PASSWORDS["alice"], new)
        assert changed.status_code == 303 and changed.headers["location"] == "/me"
        assert here.cookies["broker_session"] != before
        assert here.get("/me/consents").status_code == 200
        assert there.get("/me/consents").status_code == 401
        _signed_out(rt, base, before)
        assert bob.get("/me/consents").status_code == 200
        with _browser(rt, base) as later:
            assert _sign_in(later, "alice").status_code == 401
            assert _sign_in(later, "alice", new).status_code == 303


def test_C2_2_R3_4_an_erasure_ends_every_session_of_the_customer(make_rt: MakeRt) -> None:
    """Erasing their data in one browser signs the customer out in every other one too."""
    rt = make_rt()
    with _portal(rt) as base, _browser(rt, base) as here, _browser(rt, base) as there:
        assert _sign_in(here, "bob").status_code == 303
        assert _sign_in(there, "bob").status_code == 303
        elsewhere = there.cookies["broker_session"]
        assert here.post("/me/erase", data={"confirm": "erase my data"}).status_code == 200
        _signed_out(rt, base, elsewhere)


def _until_answered(attempt: Callable[[], httpx.Response], says: str) -> httpx.Response:
    """Repeat ``attempt`` while it is asked to wait (each wait a 429 saying ``says``), up to a
    deadline; the first other answer."""
    deadline = time.monotonic() + 30
    while True:
        answer = attempt()
        if answer.status_code != 429:
            return answer
        _waits(answer, says)
        assert time.monotonic() < deadline, "still waiting after 30 s"
        time.sleep(0.05)  # a poll's pace, not a synchronisation: the loop checks the answer


def test_T7_a_stranger_slows_a_customer_but_cannot_lock_them_out(make_rt: MakeRt) -> None:
    """Eight wrong passwords for alice from a stranger's address (each sent once its wait is
    over) do not lock her account: from her address, her password signs her in once the
    current wait has passed, and until then she is told to wait (429), never refused."""
    rt = make_rt(
        portal_signin_free_failures=2,
        portal_signin_delay_s=0.1,
        portal_signin_max_delay_s=0.4,
    )
    says = "Too many wrong passwords for this account"
    with _portal(rt) as base, _browser(rt, base, STRANGER) as stranger:
        for _ in range(8):
            assert (
                _until_answered(lambda: _sign_in(stranger, "alice", WRONG), says).status_code == 401
            )
        with _browser(rt, base) as alice:
            signed = _until_answered(lambda: _sign_in(alice, "alice"), says)
            assert signed.status_code == 303, signed.text
            assert alice.get("/me/consents").status_code == 200


def test_T7_waits_grow_to_a_cap_hold_across_portals_and_never_check_the_password(
    make_rt: MakeRt,
) -> None:
    """After two wrong passwords each attempt waits 1, 2, 4, 4 s (doubling, capped); during a
    wait even the right password gets 429 and a wrong one does not lengthen it; a second
    portal on the same database makes the same customer wait; after the wait the right
    password signs in and the count starts again."""
    clock = FixedClock(datetime.now(UTC))
    rt = make_rt(
        clock,
        portal_signin_free_failures=2,
        portal_signin_delay_s=1.0,
        portal_signin_max_delay_s=4.0,
    )
    says = "Too many wrong passwords for this account"
    with _portal(rt) as base, _browser(rt, base, STRANGER) as stranger:
        assert [_sign_in(stranger, "alice", WRONG).status_code for _ in range(2)] == [401, 401]
        waits = []
        for _ in range(4):
            wait = _waits(_sign_in(stranger, "alice"), says)  # the right password, not checked
            assert _waits(_sign_in(stranger, "alice", WRONG), says) == wait
            waits.append(wait)
            clock.advance(timedelta(seconds=wait))
            assert _sign_in(stranger, "alice", WRONG).status_code == 401
        assert waits == [1, 2, 4, 4]
        with _portal(rt) as other, _browser(rt, other) as alice:
            assert _waits(_sign_in(alice, "alice"), says) == 4
            clock.advance(timedelta(seconds=4))
            assert _sign_in(alice, "alice").status_code == 303
        assert [_sign_in(stranger, "alice", WRONG).status_code for _ in range(2)] == [401, 401]
        assert _waits(_sign_in(stranger, "alice"), says) == 1


def test_T7_one_address_trying_many_accounts_waits_and_others_do_not(make_rt: MakeRt) -> None:
    """Three wrong passwords from one address, one per account (existing or not), and its next
    sign-in, for any account, waits; a customer at another address signs in at once."""
    clock = FixedClock(datetime.now(UTC))
    rt = make_rt(
        clock,
        portal_signin_free_failures=10,
        portal_signin_source_free_failures=3,
        portal_signin_delay_s=5.0,
    )
    says = "Too many wrong passwords from your address"
    with _portal(rt) as base, _browser(rt, base, STRANGER) as stranger:
        tried = [_sign_in(stranger, user, WRONG).status_code for user in ("bob", "carol", "zed")]
        assert tried == [401, 401, 401]
        assert _waits(_sign_in(stranger, "dave", WRONG), says) == 5
        assert _waits(_sign_in(stranger, "alice"), says) == 5
        with _browser(rt, base) as alice:
            assert _sign_in(alice, "alice").status_code == 303
        clock.advance(timedelta(seconds=5))
        assert _sign_in(stranger, "bob").status_code == 303


def test_T7_a_browser_the_customer_used_before_is_never_kept_waiting_by_a_stranger(
    make_rt: MakeRt,
) -> None:
    """A stranger keeps alice's account waiting (wrong passwords timed to each wait's end);
    from the browser she signed in with before (its device cookie) her password signs her in
    at once, and that browser's own wrong passwords are counted on their own. Neither her
    cookie for another name nor one the stranger got with his own password lets him skip the
    wait on hers."""
    clock = FixedClock(datetime.now(UTC))
    rt = make_rt(clock, portal_signin_free_failures=2, portal_signin_delay_s=60.0)
    says = "Too many wrong passwords for this account"
    with _portal(rt) as base, _browser(rt, base) as alice, _browser(rt, base, STRANGER) as him:
        assert _sign_in(alice, "alice").status_code == 303
        assert alice.post("/logout").status_code == 303
        assert _sign_in(him, "bob").status_code == 303  # his own account: his own device cookie
        assert [_sign_in(him, "alice", WRONG).status_code for _ in range(2)] == [401, 401]
        assert _waits(_sign_in(him, "alice"), says) == 60
        assert _sign_in(alice, "alice").status_code == 303  # at once, from her browser
        assert alice.get("/me/consents").status_code == 200
        with _browser(rt, base) as elsewhere:  # her password from a new browser waits
            assert _waits(_sign_in(elsewhere, "alice"), says) == 60
        assert [_sign_in(alice, "alice", WRONG).status_code for _ in range(2)] == [401, 401]
        assert _waits(_sign_in(alice, "alice"), says) == 60  # her browser's own count
        assert _sign_in(alice, "bob", WRONG).status_code == 401  # a name her cookie is not for
