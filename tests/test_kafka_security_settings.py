"""KAFKA_SECURITY_PROTOCOL / KAFKA_SASL_* / KAFKA_SSL_*: what is accepted, what is refused and how the
refusal reads, what the clients get, and that no secret shows in a repr, a message or an error."""

from __future__ import annotations

import ssl

import faust
import pytest

from stream_app.kafka_security import (KafkaSecurity, Secret, SecurityConfigError, explain_connection_error,
                                       security_from_env)
from stream_app.settings import Settings

from .helpers_tls import make_pki

PASSWORD = "pa55-Word-never-shown"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def _refused(env: dict[str, str]) -> str:
    with pytest.raises(SecurityConfigError) as info:
        security_from_env(env)
    message = str(info.value)
    assert PASSWORD not in message and PASSWORD not in repr(info.value)
    return message


def test_default_is_plaintext_and_changes_nothing():
    security = security_from_env({})
    assert security == KafkaSecurity()
    assert security.faust_credentials() is None
    assert security.kafka_python_kwargs() == {"security_protocol": "PLAINTEXT"}
    assert security.aiokafka_kwargs() == {"security_protocol": "PLAINTEXT"}


def test_sasl_ssl_with_scram_sha_512_by_default(pki):
    security = security_from_env({"KAFKA_SECURITY_PROTOCOL": "sasl_ssl", "KAFKA_SASL_USERNAME": "svc",
                                  "KAFKA_SASL_PASSWORD": PASSWORD, "KAFKA_SSL_CAFILE": str(pki.ca)})
    assert (security.protocol, security.mechanism, security.username) == ("SASL_SSL", "SCRAM-SHA-512", "svc")

    credentials = security.faust_credentials()
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol.value == "SASL_SSL" and credentials.mechanism.value == "SCRAM-SHA-512"
    assert credentials.password == PASSWORD and PASSWORD not in repr(credentials)
    context = credentials.ssl_context
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname

    for kwargs in (security.kafka_python_kwargs(), security.aiokafka_kwargs()):
        assert kwargs["security_protocol"] == "SASL_SSL" and kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
        assert kwargs["sasl_plain_username"] == "svc" and kwargs["sasl_plain_password"] == PASSWORD
        assert kwargs["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    assert security.kafka_python_kwargs()["ssl_check_hostname"] is True


def test_password_from_a_secret_file(tmp_path):
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")
    security = security_from_env({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "scram-sha-256",
                                  "KAFKA_SASL_USERNAME": "svc", "KAFKA_SASL_PASSWORD_FILE": str(secret)})
    assert security.password is not None and security.password.reveal() == PASSWORD
    assert security.mechanism == "SCRAM-SHA-256"
    assert security.cafile is None  # the system trust store
    assert security.ssl_context().verify_mode == ssl.CERT_REQUIRED


def test_mutual_tls(pki):
    security = security_from_env({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": str(pki.ca),
                                  "KAFKA_SSL_CERTFILE": str(pki.client_cert), "KAFKA_SSL_KEYFILE": str(pki.client_key)})
    credentials = security.faust_credentials()
    assert isinstance(credentials, faust.SSLCredentials) and credentials.protocol.value == "SSL"
    assert "sasl_mechanism" not in security.kafka_python_kwargs()


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


def test_connection_errors_name_the_setting_not_the_secret():
    from aiokafka.errors import SaslAuthenticationFailed

    security = KafkaSecurity("SASL_SSL", "SCRAM-SHA-512", "svc", Secret(PASSWORD))
    try:
        try:
            raise SaslAuthenticationFailed("Authentication failed during authentication due to invalid credentials")
        except SaslAuthenticationFailed as inner:
            raise ConnectionError("Unable to bootstrap") from inner
    except ConnectionError as exc:
        message = explain_connection_error(exc, security, "broker:9094")
    assert message is not None and PASSWORD not in message
    assert "Kafka at broker:9094 refused authentication (SASL_SSL, SCRAM-SHA-512 as user 'svc'" in message
    assert "KAFKA_SASL_PASSWORD_FILE" in message
    assert explain_connection_error(TimeoutError("slow"), security, "broker:9094") is None
