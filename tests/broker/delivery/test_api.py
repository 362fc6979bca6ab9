"""Delivery and deletion routes through the real HTTPS server with client certificates and
bound tokens (X.1332 R3.4, C2.2): the published key, a recipient's own deletion requests,
signed acknowledgements (bad ones refused with clear errors), and the regulator's view."""

from __future__ import annotations

from broker.ca.authority import CertificateAuthority
from broker.delivery.deletion import ACK_TYPE
from broker.delivery.signing import load_delivery_key, public_jwk
from broker.runtime.wiring import open_deletions
from demo.receiver import sign_as_recipient
from tests.broker.oauth.conftest import Broker, Party, broker  # noqa: F401 (the fixture)


def _ack(who: Party, deletion_id: str, release_ids: list[str]) -> str:
    claims = {"deletion_id": deletion_id, "recipient": who.name, "release_ids": release_ids,
              "deleted_at": "2026-11-25T12:00:00+00:00"}  # fmt: skip
    return sign_as_recipient(who.jwk, claims, ACK_TYPE)


def test_R3_4_deletion_requests_and_signed_acks_over_the_api(broker: Broker) -> None:  # noqa: F811
    acme, rival = broker.onboard("acme"), broker.onboard("rival")
    with broker.rt.db.transaction() as session:
        deletion_id = open_deletions(broker.rt).request(
            session, "acme", "CUST-0000001", ["rl_1", "rl_2"], "withdrawn", "cn_1"
        )
    scope = "deletions:read deletions:write"
    auth = {"Authorization": f"Bearer {broker.token(acme, scope).json()['access_token']}"}
    other = {"Authorization": f"Bearer {broker.token(rival, scope).json()['access_token']}"}
    with broker.client(acme) as client:
        keys = client.get("/.well-known/jwks.json").json()["keys"]
        assert keys == [public_jwk(load_delivery_key(broker.rt.settings))]
        (listed,) = client.get("/v1/deletions", headers=auth).json()
        assert listed["deletion_id"] == deletion_id and listed["status"] == "requested"
        assert "CUST-" not in str(listed)  # the customer only as a keyed hash
        path = f"/v1/deletions/{deletion_id}/ack"
        wrong = client.post(path, headers=auth, json={"ack": _ack(acme, deletion_id, ["rl_1"])})
        assert wrong.status_code == 422 and wrong.json()["error"] == "BadAcknowledgement"
        forged = client.post(
            path, headers=auth, json={"ack": _ack(rival, deletion_id, ["rl_1", "rl_2"])}
        )
        assert forged.status_code == 422
        extra = client.post(path, headers=auth, json={"ack": "x", "status": "acknowledged"})
        assert extra.status_code == 422  # no mass assignment
        good = _ack(acme, deletion_id, ["rl_1", "rl_2"])
        assert (
            client.post(path, headers=auth, json={"ack": good}).json()["status"] == "acknowledged"
        )
        again = client.post(path, headers=auth, json={"ack": good})
        assert again.status_code == 409
        assert client.get("/v1/regulator/deletions", headers=auth).status_code == 403
    with broker.client(rival) as client:
        assert client.get("/v1/deletions", headers=other).json() == []
        theirs = client.post(
            path, headers=other, json={"ack": _ack(rival, deletion_id, ["rl_1", "rl_2"])}
        )
        assert theirs.status_code == 404  # another's request: as if none existed


def test_R3_4_the_regulator_reads_every_recipients_deletions(broker: Broker) -> None:  # noqa: F811
    broker.onboard("acme")
    with broker.rt.db.transaction() as session:
        open_deletions(broker.rt).request(session, "acme", "CUST-1", ["rl_9"], "erasure")
        CertificateAuthority(broker.rt.settings, broker.rt.clock).issue(
            session, broker.rt.audit, role="regulator", name="reg", actor="test"
        )
    ca_dir = broker.rt.settings.ca_dir / "issued"
    regulator = Party("reg", ca_dir / "reg.pem", ca_dir / "reg.key", None)  # type: ignore[arg-type]
    with broker.client(regulator) as client:
        (found,) = client.get("/v1/regulator/deletions", params={"status": "requested"}).json()
        assert found["reason"] == "erasure" and found["recipient"] == "acme"
        assert client.get("/v1/regulator/deletions", params={"status": "overdue"}).json() == []
        assert client.get("/v1/regulator/deletions", params={"status": "lost"}).status_code == 422
        metrics = client.get("/v1/regulator/metrics").json()
    assert metrics["deletions"]["requested"] == 1 and metrics["deletions"]["overdue"] == 0
