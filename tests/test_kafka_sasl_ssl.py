"""The whole pipeline through a secured broker: SCRAM-SHA-512 over TLS with the broker's certificate
verified, and mutual TLS. Wrong credentials and an unknown CA are refused with a message that names the
setting to fix, and the password shows nowhere.

The module starts its own broker (the same LocalKafka as the session fixture) with two extra listeners,
SASL_SSL and SSL (client certificate required), a PKI made here with openssl, and a SCRAM user written
by the broker's own storage tool (`kafka-storage format --add-scram`). If it cannot start, the tests fail.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

from stream_app.broker.local_kafka import BrokerError, LocalKafka, free_port
from stream_app.kafka_security import security_from_env
from stream_app.replay import replay_records
from stream_app.segments.config import CatalogConfig
from stream_app.timeutil import MINUTE_MS

from .helpers import REPO, Names, WorkerProcess, encode, page, track, wait_for
from .helpers_tls import Pki, make_pki

pytestmark = [pytest.mark.kafka]

USER = "stream-app-svc"
PASSWORD = "scram-" + secrets.token_hex(12)  # random per run: finding it in any output is a real leak


@dataclass
class SecuredKafka:
    broker: LocalKafka
    pki: Pki
    sasl_ssl: str
    ssl: str

    def sasl_env(self, password_file: Path | None = None, password: str | None = None, cafile: Path | None = None) -> dict[str, str]:
        env = {"KAFKA_BOOTSTRAP_SERVERS": self.sasl_ssl, "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
               "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512", "KAFKA_SASL_USERNAME": USER,
               "KAFKA_SSL_CAFILE": str(cafile or self.pki.ca)}
        if password_file is not None:
            env["KAFKA_SASL_PASSWORD_FILE"] = str(password_file)
        else:
            env["KAFKA_SASL_PASSWORD"] = password or PASSWORD
        return env

    def tls_env(self) -> dict[str, str]:
        return {"KAFKA_BOOTSTRAP_SERVERS": self.ssl, "KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": str(self.pki.ca),
                "KAFKA_SSL_CERTFILE": str(self.pki.client_cert), "KAFKA_SSL_KEYFILE": str(self.pki.client_key)}


@pytest.fixture(scope="module")
def secured_kafka() -> Iterator[SecuredKafka]:
    data_dir = Path(tempfile.mkdtemp(prefix="stream-app-test-sasl-kafka-"))
    pki = make_pki(data_dir / "pki")
    port, controller, sasl_port, ssl_port = free_port(), free_port(), free_port(), free_port()
    overrides = {
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller},"
                     f"SASL_SSL://127.0.0.1:{sasl_port},SSL://127.0.0.1:{ssl_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port},SASL_SSL://127.0.0.1:{sasl_port},SSL://127.0.0.1:{ssl_port}",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL",
        "sasl.enabled.mechanisms": "SCRAM-SHA-512",
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        "ssl.keystore.type": "PKCS12", "ssl.keystore.location": str(pki.broker_keystore),
        "ssl.keystore.password": pki.keystore_password, "ssl.key.password": pki.keystore_password,
        "ssl.truststore.type": "PEM", "ssl.truststore.location": str(pki.ca),
        "listener.name.ssl.ssl.client.auth": "required",
    }
    broker = LocalKafka(data_dir, port=port, controller_port=controller, overrides=overrides,
                        scram_credentials=(f"SCRAM-SHA-512=[name={USER},password={PASSWORD}]",))
    try:
        broker.start()
    except BrokerError as exc:
        shutil.rmtree(data_dir, ignore_errors=True)
        pytest.fail(f"these tests need a real Kafka broker with a SASL_SSL listener and it could not be started: {exc}", pytrace=False)
    try:
        yield SecuredKafka(broker, pki, f"127.0.0.1:{sasl_port}", f"127.0.0.1:{ssl_port}")
    finally:
        broker.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def _names(bootstrap: str) -> Names:
    return Names(bootstrap, partitions=2)


def _cli(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stream_app", *args], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def _read_all(env: dict[str, str], topic: str, idle_ms: int = 2000) -> list[Any]:
    """Every committed record of a topic, through the secured listener."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"], auto_offset_reset="earliest",
                             group_id=None, isolation_level="read_committed", consumer_timeout_ms=idle_ms,
                             **security_from_env(env).kafka_python_kwargs())
    rows = [None if m.value is None else json.loads(m.value) for m in consumer]
    consumer.close()
    return rows


def _events() -> list[dict]:
    t = int(time.time() * 1000) - 10 * MINUTE_MS
    return [
        track("shopper", "Product Added", t, product_id="p1"),
        page("shopper", "Pricing", t + 1000),
        track("shopper", "Checkout Started", t + 2000),  # intent 2 + 3 + 4 >= 6
        track("buyer", "Product Added", t + 500, product_id="p2"),
        track("buyer", "Order Completed", t + 60_000, revenue=40),
    ]


def test_pipeline_over_sasl_ssl_with_verified_certificate(secured_kafka, tmp_path):
    password_file = tmp_path / "kafka-password"
    password_file.write_text(PASSWORD + "\n")
    names = _names(secured_kafka.sasl_ssl)
    events = _events()
    lines = tmp_path / "events.jsonl"
    lines.write_text("".join(json.dumps(e) + "\n" for e in events))

    # the CLI creates the topics and produces through SASL_SSL (password in the environment)...
    base = names.env(tmp_path / "unused", free_port())
    produced = _cli(["produce", "--input", str(lines)], {**base, **secured_kafka.sasl_env(password=PASSWORD)})
    assert produced.returncode == 0, produced.stderr[-3000:]
    assert PASSWORD not in produced.stdout + produced.stderr

    # ... and the worker reads its password from a secret file
    worker = WorkerProcess(names, tmp_path / "w")
    worker.start_env = secured_kafka.sasl_env(password_file=password_file)
    worker.start()
    try:
        # the catalog's per-user segments, as `stream-app replay` decides them (same deterministic ids)
        replayed, _dead, _store = replay_records([encode(e) for e in events], CatalogConfig(), until_ms=None)
        expected = [r for r in replayed if r["segment"] in ("high_intent", "lifecycle")]
        assert {(r["user_id"], r["to"]) for r in expected} == {("shopper", "high_intent"), ("shopper", "new_lead"),
                                                              ("buyer", "new_lead"), ("buyer", "activated")}
        want = {r["transition_id"] for r in expected}
        read_env = secured_kafka.sasl_env(password_file=password_file)
        seen: list[Any] = []

        def arrived() -> list[Any] | None:
            worker.assert_alive()
            seen[:] = _read_all(read_env, names.transitions)
            return seen if want <= {r["transition_id"] for r in seen} else None

        try:
            got = wait_for(arrived, 120, f"the {len(want)} transitions of the events, through SASL_SSL")
        except AssertionError as exc:
            brief = sorted((r["user_id"], r["segment"], r["to"], r["transition_id"]) for r in seen)
            raise AssertionError(f"{exc}; read {brief}; worker log:\n{worker.log()[-3000:]}") from None
        ids = [r["transition_id"] for r in got]
        assert all(ids.count(t) == 1 for t in want), "a transition was emitted twice"
        by_id = {r["transition_id"]: r for r in got}
        keys = ("user_id", "segment", "from", "to", "at", "cause")
        assert [{k: by_id[r["transition_id"]][k] for k in keys} for r in expected] == [{k: r[k] for k in keys} for r in expected]
        memberships = wait_for(lambda: _read_all(read_env, names.memberships), 30, "memberships through SASL_SSL")
        assert {m["user_id"] for m in memberships if m} == {"shopper", "buyer"}
        assert PASSWORD not in worker.metrics()
    finally:
        code = worker.stop()
    log = worker.log()
    assert code == 0, log[-3000:]
    assert PASSWORD not in log, "the SCRAM password was written to the worker's output"


def test_wrong_password_is_refused_with_a_clear_error(secured_kafka, tmp_path):
    wrong = "wrong-" + secrets.token_hex(8)
    names = _names(secured_kafka.sasl_ssl)
    lines = tmp_path / "events.jsonl"
    lines.write_text(json.dumps(_events()[0]) + "\n")
    env = {**names.env(tmp_path / "unused", free_port()), **secured_kafka.sasl_env(password=wrong)}

    produced = _cli(["produce", "--input", str(lines)], env)
    assert produced.returncode == 2, produced.stdout + produced.stderr
    assert f"error: Kafka at {secured_kafka.sasl_ssl} refused authentication" in produced.stderr
    assert f"SCRAM-SHA-512 as user '{USER}'" in produced.stderr and "KAFKA_SASL_PASSWORD" in produced.stderr
    assert "Traceback" not in produced.stderr
    assert wrong not in produced.stdout + produced.stderr

    worker = WorkerProcess(names, tmp_path / "w")
    worker.start_env = secured_kafka.sasl_env(password=wrong)
    worker.start()
    assert worker.proc is not None
    try:
        code = worker.proc.wait(120)
    finally:
        worker.stop()
    log = worker.log()
    assert code != 0, log[-3000:]
    assert "refused authentication" in log and wrong not in log and PASSWORD not in log


def test_unknown_certificate_authority_is_refused(secured_kafka, tmp_path):
    """Verification is on: the broker's certificate, signed by the test CA, is not trusted under another CA."""
    lines = tmp_path / "events.jsonl"
    lines.write_text(json.dumps(_events()[0]) + "\n")
    names = _names(secured_kafka.sasl_ssl)
    env = {**names.env(tmp_path / "unused", free_port()), **secured_kafka.sasl_env(cafile=secured_kafka.pki.other_ca)}
    produced = _cli(["produce", "--input", str(lines)], env)
    assert produced.returncode == 2, produced.stdout + produced.stderr
    assert f"the TLS certificate of Kafka at {secured_kafka.sasl_ssl} could not be verified" in produced.stderr
    assert "KAFKA_SSL_CAFILE" in produced.stderr and PASSWORD not in produced.stderr


def test_mutual_tls_listener(secured_kafka, tmp_path):
    """SSL with a client certificate (the listener requires one): produce with the CLI, read back."""
    names = _names(secured_kafka.ssl)
    events = _events()
    lines = tmp_path / "events.jsonl"
    lines.write_text("".join(json.dumps(e) + "\n" for e in events))
    env = {**names.env(tmp_path / "unused", free_port()), **secured_kafka.tls_env()}
    produced = _cli(["produce", "--input", str(lines)], env)
    assert produced.returncode == 0, produced.stderr[-3000:]
    rows = _read_all(secured_kafka.tls_env(), names.input)
    assert sorted(r["messageId"] for r in rows) == sorted(e["messageId"] for e in events)
