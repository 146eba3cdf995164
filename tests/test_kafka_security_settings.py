"""KAFKA_SECURITY_PROTOCOL / KAFKA_SASL_* / KAFKA_SSL_*: what is accepted, what is refused and how the
refusal reads, what the clients get (librdkafka's properties; kafka-python's keyword arguments, for the
test readers), and that no secret shows in a repr, a message or an error. No broker here: the refusals of a real
one are in test_kafka_sasl_ssl.py."""

from __future__ import annotations

import logging
import socket
import ssl
import subprocess
import time

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from stream_app.kafka_security import (KafkaAccessError, KafkaSecurity, Secret, SecurityConfigError, check_access,
                                       explain_connection_error, security_from_env)
from stream_app.settings import Settings

from .helpers_tls import make_pki

PASSWORD = "pa55-Word-never-shown"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def _librdkafka_accepts(config: dict[str, str]) -> None:
    """librdkafka takes the properties: names and values are valid, and the CA, certificate and key load
    (a client is built; nothing listens on the address, and its log lines are kept out of the output)."""
    quiet = logging.getLogger("test.librdkafka")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    client = AdminClient({"bootstrap.servers": f"127.0.0.1:{_closed_port()}", **config, "logger": quiet})
    del client


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _refused(env: dict[str, str]) -> str:
    with pytest.raises(SecurityConfigError) as info:
        security_from_env(env)
    message = str(info.value)
    assert PASSWORD not in message and PASSWORD not in repr(info.value)
    return message


def test_default_is_plaintext_and_changes_nothing():
    security = security_from_env({})
    assert security == KafkaSecurity()
    assert security.kafka_python_kwargs() == {"security_protocol": "PLAINTEXT"}
    assert security.librdkafka_config() == {"security.protocol": "PLAINTEXT"}
    _librdkafka_accepts(security.librdkafka_config())


def test_sasl_ssl_with_scram_sha_512_by_default(pki):
    security = security_from_env({"KAFKA_SECURITY_PROTOCOL": "sasl_ssl", "KAFKA_SASL_USERNAME": "svc",
                                  "KAFKA_SASL_PASSWORD": PASSWORD, "KAFKA_SSL_CAFILE": str(pki.ca)})
    assert (security.protocol, security.mechanism, security.username) == ("SASL_SSL", "SCRAM-SHA-512", "svc")

    kwargs = security.kafka_python_kwargs()
    assert kwargs["security_protocol"] == "SASL_SSL" and kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kwargs["sasl_plain_username"] == "svc" and kwargs["sasl_plain_password"] == PASSWORD
    assert kwargs["ssl_context"].verify_mode == ssl.CERT_REQUIRED and kwargs["ssl_context"].check_hostname
    assert kwargs["ssl_check_hostname"] is True

    assert security.librdkafka_config() == {
        "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "svc",
        "sasl.password": PASSWORD, "ssl.ca.location": str(pki.ca), "ssl.endpoint.identification.algorithm": "https"}
    _librdkafka_accepts(security.librdkafka_config())


def test_password_from_a_secret_file(tmp_path):
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")
    security = security_from_env({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "scram-sha-256",
                                  "KAFKA_SASL_USERNAME": "svc", "KAFKA_SASL_PASSWORD_FILE": str(secret)})
    assert security.password is not None and security.password.reveal() == PASSWORD
    assert security.mechanism == "SCRAM-SHA-256"
    assert security.cafile is None  # the system trust store
    assert security.ssl_context().verify_mode == ssl.CERT_REQUIRED
    # no ssl.ca.location: librdkafka then uses the system's CAs (the wheels' static OpenSSL probes the usual
    # bundle paths); "probe" would do the same there, and a dynamically linked one uses OpenSSL's defaults
    config = security.librdkafka_config()
    assert "ssl.ca.location" not in config
    assert (config["sasl.mechanism"], config["sasl.password"]) == ("SCRAM-SHA-256", PASSWORD)
    _librdkafka_accepts(config)


def test_mutual_tls(pki):
    security = security_from_env({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": str(pki.ca),
                                  "KAFKA_SSL_CERTFILE": str(pki.client_cert), "KAFKA_SSL_KEYFILE": str(pki.client_key)})
    kwargs = security.kafka_python_kwargs()
    assert kwargs["security_protocol"] == "SSL" and "sasl_mechanism" not in kwargs
    assert security.librdkafka_config() == {
        "security.protocol": "SSL", "ssl.ca.location": str(pki.ca), "ssl.certificate.location": str(pki.client_cert),
        "ssl.key.location": str(pki.client_key), "ssl.endpoint.identification.algorithm": "https"}
    _librdkafka_accepts(security.librdkafka_config())


def test_mutual_tls_with_an_encrypted_key_or_the_key_in_the_certificate_file(pki, tmp_path):
    encrypted = tmp_path / "client-encrypted.key"
    subprocess.run(["openssl", "pkcs8", "-topk8", "-in", str(pki.client_key), "-out", str(encrypted), "-v2", "aes-256-cbc",
                    "-passout", f"pass:{PASSWORD}"], check=True, capture_output=True)
    password_file = tmp_path / "key-password"
    password_file.write_text(PASSWORD + "\n")
    security = security_from_env({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": str(pki.ca),
                                  "KAFKA_SSL_CERTFILE": str(pki.client_cert), "KAFKA_SSL_KEYFILE": str(encrypted),
                                  "KAFKA_SSL_KEY_PASSWORD_FILE": str(password_file)})
    config = security.librdkafka_config()
    assert (config["ssl.key.location"], config["ssl.key.password"]) == (str(encrypted), PASSWORD)
    _librdkafka_accepts(config)
    for text in (repr(security), str(security), security.describe()):
        assert PASSWORD not in text

    # without KAFKA_SSL_KEYFILE the key is in the certificate's PEM file (as for Python's load_cert_chain);
    # librdkafka needs ssl.key.location for it all the same
    combined = tmp_path / "client-with-key.pem"
    combined.write_text(pki.client_cert.read_text() + pki.client_key.read_text())
    security = security_from_env({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CERTFILE": str(combined)})
    config = security.librdkafka_config()
    assert config["ssl.certificate.location"] == config["ssl.key.location"] == str(combined)
    _librdkafka_accepts(config)


def test_hostname_check_off_is_endpoint_identification_none(pki):
    security = security_from_env({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "PLAIN",
                                  "KAFKA_SASL_USERNAME": "svc", "KAFKA_SASL_PASSWORD": PASSWORD,
                                  "KAFKA_SSL_CAFILE": str(pki.ca), "KAFKA_SSL_CHECK_HOSTNAME": "false"})
    config = security.librdkafka_config()
    assert config["ssl.endpoint.identification.algorithm"] == "none"
    assert config["ssl.ca.location"] == str(pki.ca)  # the certificate itself is still verified
    assert config["sasl.mechanism"] == "PLAIN"
    _librdkafka_accepts(config)


def test_sasl_plaintext_sets_no_ssl_property():
    security = security_from_env({"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_USERNAME": "svc",
                                  "KAFKA_SASL_PASSWORD": PASSWORD})
    assert security.librdkafka_config() == {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-512",
                                            "sasl.username": "svc", "sasl.password": PASSWORD}


@pytest.mark.parametrize("env, expected", [
    ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL='TLS' is not supported; use one of PLAINTEXT, SSL, SASL_SSL"),
    ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_PASSWORD": PASSWORD}, "SASL_SSL needs KAFKA_SASL_USERNAME"),
    ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_USERNAME": "svc"}, "needs KAFKA_SASL_PASSWORD_FILE (or KAFKA_SASL_PASSWORD)"),
    ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_USERNAME": "svc", "KAFKA_SASL_PASSWORD": PASSWORD,
      "KAFKA_SASL_MECHANISM": "GSSAPI"}, "KAFKA_SASL_MECHANISM='GSSAPI' is not supported; use one of SCRAM-SHA-512"),
    ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_USERNAME": "svc", "KAFKA_SASL_PASSWORD": PASSWORD,
      "KAFKA_SASL_PASSWORD_FILE": "/run/secrets/kafka"}, "both KAFKA_SASL_PASSWORD and KAFKA_SASL_PASSWORD_FILE are set"),
    ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_USERNAME": "svc",
      "KAFKA_SASL_PASSWORD_FILE": "/nonexistent/kafka-password"}, "KAFKA_SASL_PASSWORD_FILE=/nonexistent/kafka-password: cannot read"),
    ({"KAFKA_SASL_USERNAME": "svc", "KAFKA_SASL_PASSWORD": PASSWORD},
     "KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD set but KAFKA_SECURITY_PROTOCOL=PLAINTEXT does not use SASL; set KAFKA_SECURITY_PROTOCOL=SASL_SSL"),
    ({"KAFKA_SSL_CAFILE": "/etc/ssl/ca.pem"}, "KAFKA_SSL_CAFILE set but KAFKA_SECURITY_PROTOCOL=PLAINTEXT does not use TLS"),
    ({"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_MECHANISM": "PLAIN", "KAFKA_SASL_USERNAME": "svc",
      "KAFKA_SASL_PASSWORD": PASSWORD}, "would send the password in clear text; use SASL_SSL"),
    ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"}, "KAFKA_SSL_CAFILE=/nonexistent/ca.pem: no such file"),
    ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CHECK_HOSTNAME": "maybe"}, "KAFKA_SSL_CHECK_HOSTNAME='maybe' is not a boolean"),
])
def test_inconsistent_settings_are_refused_with_the_fix(env, expected):
    assert expected in _refused(env)


def test_client_key_needs_its_certificate_and_must_load(pki, tmp_path):
    assert "KAFKA_SSL_KEYFILE is set without KAFKA_SSL_CERTFILE" in _refused(
        {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_KEYFILE": str(pki.client_key)})
    # a certificate with somebody else's key
    message = _refused({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CERTFILE": str(pki.client_cert),
                        "KAFKA_SSL_KEYFILE": str(pki.ca.with_suffix(".key")), "KAFKA_SSL_KEY_PASSWORD": PASSWORD})
    assert "the client certificate and key cannot be loaded" in message
    empty = tmp_path / "empty"
    empty.write_text("")
    assert "the file is empty" in _refused({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_USERNAME": "svc",
                                           "KAFKA_SASL_PASSWORD_FILE": str(empty)})


def test_settings_repr_and_errors_hide_the_password(monkeypatch, pki):
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "svc")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", PASSWORD)
    monkeypatch.setenv("KAFKA_SSL_CAFILE", str(pki.ca))
    settings = Settings()
    assert settings.kafka_security.password == Secret(PASSWORD)
    for text in (repr(settings), str(settings), repr(settings.kafka_security), f"{settings.kafka_security.password}",
                 settings.kafka_security.describe()):
        assert PASSWORD not in text
    assert "password=Secret('***')" in repr(settings) and "username='svc'" in repr(settings)

    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "KERBEROS")
    with pytest.raises(SystemExit) as info:
        Settings()
    assert "KAFKA_SASL_MECHANISM='KERBEROS' is not supported" in str(info.value.code) and PASSWORD not in str(info.value.code)


SASL_SSL = KafkaSecurity("SASL_SSL", "SCRAM-SHA-512", "svc", Secret(PASSWORD))
# librdkafka's error_cb strings, as a broker gives them (tests/test_kafka_sasl_ssl.py has the real thing)
RD_AUTH = ("sasl_ssl://broker:9094/bootstrap: SASL authentication error: Authentication failed during authentication due "
           "to invalid credentials with SASL mechanism SCRAM-SHA-512 (after 324ms in state AUTH_REQ)")
RD_MECHANISM = ("sasl_ssl://broker:9094/bootstrap: SASL SCRAM-SHA-256 mechanism handshake failed: Broker: Unsupported SASL "
                "mechanism: broker's supported mechanisms: SCRAM-SHA-512 (after 302ms in state AUTH_HANDSHAKE)")
RD_VERIFY = ("sasl_ssl://broker:9094/bootstrap: SSL handshake failed: error:0A000086:SSL routines::certificate verify failed: "
             "broker certificate could not be verified, verify that ssl.ca.location is correctly configured or root CA "
             "certificates are installed (install ca-certificates package) (after 29ms in state SSL_HANDSHAKE)")
RD_VERIFY_TRANSPORT = ("sasl_ssl://broker:9094/bootstrap: error:0A000086:SSL routines::certificate verify failed "
                       "(after 36ms in state SSL_HANDSHAKE, 1 identical error(s) suppressed)")


def test_connection_errors_name_the_setting_not_the_secret():
    """Python clients' exceptions, kafka-python's here (searched along the chain of causes)."""
    from kafka.errors import SaslAuthenticationFailedError

    security = SASL_SSL
    try:
        try:
            raise SaslAuthenticationFailedError("Authentication failed during authentication due to invalid credentials")
        except SaslAuthenticationFailedError as inner:
            raise ConnectionError("Unable to bootstrap") from inner
    except ConnectionError as exc:
        message = explain_connection_error(exc, security, "broker:9094")
    assert message is not None and PASSWORD not in message
    assert "Kafka at broker:9094 refused authentication (SASL_SSL, SCRAM-SHA-512 as user 'svc'" in message
    assert "KAFKA_SASL_PASSWORD_FILE" in message
    assert explain_connection_error(TimeoutError("slow"), security, "broker:9094") is None

    unverified = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    unverified.verify_message = "unable to get local issuer certificate"
    message = explain_connection_error(unverified, security, "broker:9094")
    assert message is not None and message.startswith("the TLS certificate of Kafka at broker:9094 could not be verified "
                                                      "(unable to get local issuer certificate; SASL_SSL")
    assert "set KAFKA_SSL_CAFILE" in message


@pytest.mark.parametrize("error", [KafkaError(KafkaError._AUTHENTICATION, RD_AUTH),
                                   KafkaException(KafkaError(KafkaError._AUTHENTICATION, RD_AUTH))])
def test_librdkafka_authentication_failure_names_the_sasl_settings(error):
    message = explain_connection_error(error, SASL_SSL, "broker:9094")
    assert message == ("Kafka at broker:9094 refused authentication (SASL_SSL, SCRAM-SHA-512 as user 'svc', CA system "
                       "trust store): "
                       "SASL authentication error: Authentication failed during authentication due to invalid credentials "
                       "with SASL mechanism SCRAM-SHA-512; check KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD_FILE (or "
                       "KAFKA_SASL_PASSWORD) and KAFKA_SASL_MECHANISM against the user's SCRAM credentials on the cluster")
    mechanism = explain_connection_error(KafkaError(KafkaError._AUTHENTICATION, RD_MECHANISM), SASL_SSL, "broker:9094")
    assert mechanism is not None and "broker's supported mechanisms: SCRAM-SHA-512; check KAFKA_SASL_USERNAME" in mechanism


@pytest.mark.parametrize("error", [KafkaError(KafkaError._SSL, RD_VERIFY), KafkaError(KafkaError._TRANSPORT, RD_VERIFY_TRANSPORT),
                                   KafkaException(KafkaError(KafkaError._SSL, RD_VERIFY))])
def test_librdkafka_certificate_failure_names_the_cafile(error):
    message = explain_connection_error(error, SASL_SSL, "broker:9094")
    assert message is not None
    assert message.startswith("the TLS certificate of Kafka at broker:9094 could not be verified (")
    assert "certificate verify failed; SASL_SSL, SCRAM-SHA-512 as user 'svc', CA system trust store): set KAFKA_SSL_CAFILE" in message
    assert "ssl.ca.location" not in message  # librdkafka's advice names its own property, not ours


@pytest.mark.parametrize("error", [
    KafkaError(KafkaError._TRANSPORT, "sasl_ssl://broker:9094/bootstrap: Connect to ipv4#10.0.0.1:9094 failed: Connection "
                                      "refused (after 0ms in state CONNECT)"),
    KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"),
    KafkaError(KafkaError._TRANSPORT, "ssl://broker:9093/bootstrap: SSL handshake failed: Disconnected: SSL connection closed "
                                      "by peer: connecting to a PLAINTEXT broker listener? (after 5ms in state SSL_HANDSHAKE)"),
    KafkaException(KafkaError(KafkaError._TRANSPORT, "Failed to get metadata: Local: Broker transport failure")),
])
def test_other_librdkafka_errors_are_left_to_the_clients(error):
    assert explain_connection_error(error, SASL_SSL, "broker:9094") is None


def test_a_secret_echoed_by_a_client_library_is_hidden():
    error = KafkaError(KafkaError._AUTHENTICATION, f"sasl_ssl://broker:9094/bootstrap: bad password {PASSWORD} (after 1ms in state AUTH_REQ)")
    message = explain_connection_error(error, SASL_SSL, "broker:9094")
    assert message is not None and PASSWORD not in message and "bad password ***" in message


def test_check_access_is_a_no_op_for_plaintext_and_leaves_silent_servers_to_the_clients(capfd):
    started = time.monotonic()
    check_access(KafkaSecurity(), "127.0.0.1:1")  # PLAINTEXT: no connection at all
    # nothing listens: no error, the next server is tried at once, and librdkafka's log lines stay out of stderr
    check_access(SASL_SSL, f"127.0.0.1:{_closed_port()}, 127.0.0.1:{_closed_port()}", timeout_s=10)
    assert time.monotonic() - started < 8
    out, err = capfd.readouterr()
    assert "FAIL" not in out + err and PASSWORD not in out + err


def test_check_access_reports_a_key_librdkafka_cannot_load(pki):
    security = KafkaSecurity("SSL", cafile=pki.ca, certfile=pki.client_cert, keyfile=pki.ca.with_suffix(".key"))
    with pytest.raises(KafkaAccessError) as info:
        check_access(security, f"127.0.0.1:{_closed_port()}", timeout_s=5)
    assert "a Kafka client cannot be set up with these settings (SSL" in str(info.value)
    assert "KAFKA_SSL_CERTFILE" in str(info.value)
