"""How the worker and the CLI authenticate to Kafka and encrypt the connection (README "Configuration",
docs/security.md).

One `KafkaSecurity` value, read from the environment (secrets may come from files), and its
translations: librdkafka's configuration properties (confluent-kafka: the worker's driver and the CLI's
clients), and the keyword arguments of kafka-python clients. Secrets are held in `Secret`, whose str and
repr never show the value, so they cannot reach a log line, an exception message or a metric by accident;
they are revealed only in what is handed to a client.
"""

from __future__ import annotations

import logging
import os
import re
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_SSL", "SASL_PLAINTEXT")
MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")
HIDDEN = "***"


class SecurityConfigError(ValueError):
    """The security settings are inconsistent. The message says what is wrong and how to fix it, and
    never contains a secret."""


class Secret:
    """A password that is never shown: `str()`, `repr()` and f-strings give `***`. `reveal()` gives it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret('{HIDDEN}')"

    def __str__(self) -> str:
        return HIDDEN

    def __format__(self, spec: str) -> str:
        return HIDDEN

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def _get(environ: Mapping[str, str], name: str) -> str | None:
    value = environ.get(name)
    return value if value not in (None, "") else None


def _secret(environ: Mapping[str, str], name: str, file_name: str) -> Secret | None:
    """A secret from `name`, or from the file named by `file_name` (one trailing newline is dropped)."""
    direct, path = _get(environ, name), _get(environ, file_name)
    if direct is not None and path is not None:
        raise SecurityConfigError(f"both {name} and {file_name} are set; set only one of them "
                                  f"({file_name} is preferred: the secret stays out of the environment)")
    if path is None:
        return Secret(direct) if direct is not None else None
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SecurityConfigError(f"{file_name}={path}: cannot read the file ({exc.strerror or exc}); "
                                  f"point {file_name} at a readable file that holds only the secret") from None
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith("\n"):
        text = text[:-1]
    if not text:
        raise SecurityConfigError(f"{file_name}={path}: the file is empty; write the secret into it")
    return Secret(text)


def _existing_file(environ: Mapping[str, str], name: str) -> Path | None:
    value = _get(environ, name)
    if value is None:
        return None
    path = Path(value)
    if not path.is_file():
        raise SecurityConfigError(f"{name}={value}: no such file; point {name} at a PEM file")
    return path


def _flag(environ: Mapping[str, str], name: str, default: bool) -> bool:
    value = _get(environ, name)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise SecurityConfigError(f"{name}={value!r} is not a boolean; use true or false")


@dataclass(frozen=True)
class KafkaSecurity:
    """`protocol` is Kafka's security.protocol. The certificate of the broker is always verified (against
    `cafile`, or the system's trust store); its host name too unless `check_hostname` is off."""

    protocol: str = "PLAINTEXT"
    mechanism: str | None = None
    username: str | None = None
    password: Secret | None = None
    cafile: Path | None = None
    certfile: Path | None = None
    keyfile: Path | None = None
    key_password: Secret | None = None
    check_hostname: bool = True

    @property
    def uses_ssl(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.protocol in ("SASL_SSL", "SASL_PLAINTEXT")

    def describe(self) -> str:
        """For people and logs: the protocol, mechanism and user, never a secret."""
        parts = [self.protocol]
        if self.uses_sasl:
            parts.append(f"{self.mechanism} as user {self.username!r}")
        if self.uses_ssl:
            parts.append(f"CA {self.cafile or 'system trust store'}")
            if self.certfile:
                parts.append(f"client certificate {self.certfile}")
        return ", ".join(parts)

    # -- translations ---------------------------------------------------------------------------------

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.uses_ssl:
            return None
        try:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.cafile) if self.cafile else None)
        except (ssl.SSLError, OSError) as exc:
            raise SecurityConfigError(f"KAFKA_SSL_CAFILE={self.cafile}: not a usable PEM CA bundle ({exc}); "
                                      "give the PEM file of the CA that signed the brokers' certificates") from None
        context.check_hostname = self.check_hostname
        context.verify_mode = ssl.CERT_REQUIRED
        if self.certfile is not None:
            try:
                context.load_cert_chain(str(self.certfile), str(self.keyfile) if self.keyfile else None,
                                        password=self.key_password.reveal() if self.key_password else None)
            except (ssl.SSLError, OSError) as exc:
                reason = getattr(exc, "reason", None) or type(exc).__name__
                raise SecurityConfigError(
                    f"KAFKA_SSL_CERTFILE={self.certfile} / KAFKA_SSL_KEYFILE={self.keyfile}: the client certificate and "
                    f"key cannot be loaded ({reason}); check that they are PEM, belong together, and that "
                    "KAFKA_SSL_KEY_PASSWORD_FILE holds the key's password if it is encrypted") from None
        return context

    def librdkafka_config(self) -> dict[str, str]:
        """The librdkafka properties (confluent-kafka's Producer, Consumer and AdminClient config): merge
        them into the client's config. The only translation that holds the secrets in clear: hand it to
        the client and do not log it.

        Without `cafile` no `ssl.ca.location` is set, and the system trust store is used: librdkafka
        linked statically with OpenSSL (the confluent-kafka wheels) then probes the usual CA bundle paths
        (/etc/ssl/certs/ca-certificates.crt, /etc/pki/tls/certs/ca-bundle.crt, ...) itself, and one linked
        dynamically uses OpenSSL's default paths. A client certificate without `keyfile` holds its key in
        the same PEM file, as for Python's `load_cert_chain`."""
        config = {"security.protocol": self.protocol}
        if self.uses_sasl:
            assert self.mechanism is not None and self.username is not None and self.password is not None
            config.update({"sasl.mechanism": self.mechanism, "sasl.username": self.username,
                           "sasl.password": self.password.reveal()})
        if self.uses_ssl:
            if self.cafile is not None:
                config["ssl.ca.location"] = str(self.cafile)
            if self.certfile is not None:
                config["ssl.certificate.location"] = str(self.certfile)
                config["ssl.key.location"] = str(self.keyfile or self.certfile)
                if self.key_password is not None:
                    config["ssl.key.password"] = self.key_password.reveal()
            config["ssl.endpoint.identification.algorithm"] = "https" if self.check_hostname else "none"
        return config

    def _redact(self, text: str) -> str:
        """`text` with any of our secrets replaced by `***` (for strings that come from a client library)."""
        for secret in (self.password, self.key_password):
            if secret is not None and secret.reveal():
                text = text.replace(secret.reveal(), HIDDEN)
        return text

    def kafka_python_kwargs(self) -> dict[str, Any]:
        """For kafka-python's KafkaProducer, KafkaConsumer and KafkaAdminClient (stream_app itself runs on
        librdkafka; tests/test_kafka_sasl_ssl.py still reads with kafka-python)."""
        kwargs: dict[str, Any] = {"security_protocol": self.protocol}
        if self.uses_ssl:
            kwargs["ssl_context"] = self.ssl_context()
            kwargs["ssl_check_hostname"] = self.check_hostname
        if self.uses_sasl:
            assert self.password is not None
            kwargs.update(sasl_mechanism=self.mechanism, sasl_plain_username=self.username,
                          sasl_plain_password=self.password.reveal())
        return kwargs


def security_from_env(environ: Mapping[str, str] | None = None) -> KafkaSecurity:
    """Read and check the KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_* and KAFKA_SSL_* variables."""
    env = os.environ if environ is None else environ
    protocol = (_get(env, "KAFKA_SECURITY_PROTOCOL") or "PLAINTEXT").strip().upper().replace("-", "_")
    if protocol not in PROTOCOLS:
        raise SecurityConfigError(f"KAFKA_SECURITY_PROTOCOL={env.get('KAFKA_SECURITY_PROTOCOL')!r} is not supported; "
                                  f"use one of {', '.join(PROTOCOLS)}")
    uses_sasl = protocol.startswith("SASL_")
    uses_ssl = protocol in ("SSL", "SASL_SSL")

    mechanism_raw = _get(env, "KAFKA_SASL_MECHANISM")
    mechanism = (mechanism_raw or "SCRAM-SHA-512").strip().upper().replace("_", "-")
    if mechanism not in MECHANISMS:
        raise SecurityConfigError(f"KAFKA_SASL_MECHANISM={mechanism_raw!r} is not supported; use one of {', '.join(MECHANISMS)}")
    username = _get(env, "KAFKA_SASL_USERNAME")
    password = _secret(env, "KAFKA_SASL_PASSWORD", "KAFKA_SASL_PASSWORD_FILE")
    key_password = _secret(env, "KAFKA_SSL_KEY_PASSWORD", "KAFKA_SSL_KEY_PASSWORD_FILE")
    check_hostname = _flag(env, "KAFKA_SSL_CHECK_HOSTNAME", True)

    if uses_sasl:
        missing = [name for name, value in (("KAFKA_SASL_USERNAME", username),
                                            ("KAFKA_SASL_PASSWORD_FILE (or KAFKA_SASL_PASSWORD)", password)) if value is None]
        if missing:
            raise SecurityConfigError(f"KAFKA_SECURITY_PROTOCOL={protocol} needs {' and '.join(missing)}")
        if protocol == "SASL_PLAINTEXT" and mechanism == "PLAIN":
            raise SecurityConfigError("KAFKA_SASL_MECHANISM=PLAIN over KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT would send the "
                                      "password in clear text; use SASL_SSL, or a SCRAM mechanism")
    else:
        stray = [name for name, value in (("KAFKA_SASL_USERNAME", username), ("KAFKA_SASL_PASSWORD", password),
                                          ("KAFKA_SASL_MECHANISM", mechanism_raw)) if value is not None]
        if stray:
            raise SecurityConfigError(f"{', '.join(stray)} set but KAFKA_SECURITY_PROTOCOL={protocol} does not use SASL; "
                                      "set KAFKA_SECURITY_PROTOCOL=SASL_SSL (or unset them)")

    ssl_names = ("KAFKA_SSL_CAFILE", "KAFKA_SSL_CERTFILE", "KAFKA_SSL_KEYFILE", "KAFKA_SSL_KEY_PASSWORD",
                 "KAFKA_SSL_KEY_PASSWORD_FILE", "KAFKA_SSL_CHECK_HOSTNAME")
    if not uses_ssl:
        stray = [name for name in ssl_names if _get(env, name) is not None]
        if stray:
            raise SecurityConfigError(f"{', '.join(stray)} set but KAFKA_SECURITY_PROTOCOL={protocol} does not use TLS; "
                                      "set KAFKA_SECURITY_PROTOCOL=SSL or SASL_SSL (or unset them)")
        return KafkaSecurity(protocol, mechanism if uses_sasl else None, username, password)

    cafile = _existing_file(env, "KAFKA_SSL_CAFILE")
    certfile = _existing_file(env, "KAFKA_SSL_CERTFILE")
    keyfile = _existing_file(env, "KAFKA_SSL_KEYFILE")
    if keyfile is not None and certfile is None:
        raise SecurityConfigError("KAFKA_SSL_KEYFILE is set without KAFKA_SSL_CERTFILE; a client key needs its certificate")
    if key_password is not None and certfile is None:
        raise SecurityConfigError("a key password is set without KAFKA_SSL_CERTFILE; it only unlocks a client key")
    security = KafkaSecurity(protocol, mechanism if uses_sasl else None, username, password, cafile, certfile, keyfile,
                             key_password, check_hostname)
    security.ssl_context()  # a wrong CA bundle, certificate or key is reported now, not at the first connection
    return security


AUTH_FAILURE_HINT = ("check KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD_FILE (or KAFKA_SASL_PASSWORD) and KAFKA_SASL_MECHANISM "
                     "against the user's SCRAM credentials on the cluster")
CAFILE_HINT = ("set KAFKA_SSL_CAFILE to the PEM file of the CA that signed the brokers' certificates (and connect by a "
               "name or address the certificate lists)")

# librdkafka's error strings: "sasl_ssl://host:9096/bootstrap: <what> (after 12ms in state AUTH_REQ, ...)"
_RDKAFKA_BROKER_PREFIX = re.compile(r"^[a-z_]+://\S+?/(?:bootstrap|\d+): ")
_RDKAFKA_AFTER_SUFFIX = re.compile(r" \(after \d+ms in state [A-Z_]+(?:, .*)?\)$")
_RDKAFKA_CA_ADVICE = re.compile(r": broker certificate could not be verified, verify that ssl\.ca\.location .*$")


def _librdkafka_error(exc: Any) -> Any:
    """The `confluent_kafka.KafkaError` in `exc` (a KafkaError itself, or a KafkaException), else None."""
    try:
        from confluent_kafka import KafkaError, KafkaException
    except ImportError:  # pragma: no cover - confluent-kafka is the driver's client
        return None
    if isinstance(exc, KafkaError):
        return exc
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0]
    return None


def _librdkafka_said(error: Any) -> str:
    """What librdkafka says, without the broker name (the message names the server) and the timing."""
    said = _RDKAFKA_BROKER_PREFIX.sub("", error.str().strip())
    said = _RDKAFKA_AFTER_SUFFIX.sub("", said)
    return _RDKAFKA_CA_ADVICE.sub("", said) or error.name()


def explain_connection_error(exc: Any, security: KafkaSecurity, bootstrap: str) -> str | None:
    """A message for people when `exc` is an authentication or TLS failure (None otherwise). Never
    includes a secret.

    `exc` is an exception of a Python client such as kafka-python (the chain of causes is searched: SASL
    or authentication errors, `ssl.SSLCertVerificationError`), or librdkafka's `KafkaError` as an
    `error_cb` gets it (or a `KafkaException` holding one): `_AUTHENTICATION` for a refused login or
    SASL mechanism, `_SSL` or `_TRANSPORT` with "certificate verify failed" for an untrusted broker
    certificate or a host name it does not list."""
    refused_said: str | None = None
    unverified_said: str | None = None
    chain: list[Any] = []
    seen: Any = exc
    while seen is not None and not any(seen is e for e in chain):
        chain.append(seen)
        seen = getattr(seen, "__cause__", None) or getattr(seen, "__context__", None)
    for item in chain:
        error = _librdkafka_error(item)
        if error is not None:
            from confluent_kafka import KafkaError

            text = error.str() or ""
            if error.code() == KafkaError._AUTHENTICATION and refused_said is None:
                refused_said = _librdkafka_said(error)
            elif (error.code() in (KafkaError._SSL, KafkaError._TRANSPORT) and "certificate verify failed" in text
                  and unverified_said is None):
                unverified_said = _librdkafka_said(error)
        elif ("Sasl" in type(item).__name__ or "Authentication" in type(item).__name__) and refused_said is None:
            refused_said = str(item).strip() or type(item).__name__
        elif isinstance(item, ssl.SSLCertVerificationError) and unverified_said is None:
            unverified_said = str(item.verify_message or item)
    if refused_said is not None:
        return security._redact(f"Kafka at {bootstrap} refused authentication ({security.describe()}): {refused_said}; "
                                f"{AUTH_FAILURE_HINT}")
    if unverified_said is not None:
        return security._redact(f"the TLS certificate of Kafka at {bootstrap} could not be verified "
                                f"({unverified_said}; {security.describe()}): {CAFILE_HINT}")
    return None


class KafkaAccessError(RuntimeError):
    """The brokers refused the credentials or the TLS handshake failed; the message says which setting to
    check, and never contains a secret."""


def _quiet_logger() -> logging.Logger:
    """For librdkafka's own log lines during the check (it prints them to stderr otherwise): what matters
    is reported as `KafkaAccessError`, and the real clients log their connection failures anyway."""
    logger = logging.getLogger("stream_app.kafka_security.access_check")
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
    logger.propagate = False
    return logger


def check_access(security: KafkaSecurity, bootstrap_servers: str, timeout_s: float = 20.0) -> None:
    """With TLS or SASL configured, connect (TLS handshake, SASL authentication, a metadata request)
    to each bootstrap server in turn until one answers, and raise `KafkaAccessError` if one refuses us.
    Kafka clients only retry and time out on a refused login or an untrusted certificate ("all brokers
    are down"); this says why. Servers that do not answer (or fail otherwise) are left to the clients'
    own retries: the next one is tried, and none answering is no error here.

    Runs on confluent-kafka (librdkafka), with the same properties the driver's clients get
    (`KafkaSecurity.librdkafka_config`): librdkafka reports a refused login only to the `error_cb`."""
    if security.protocol == "PLAINTEXT":
        return
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient

    for server in [s.strip() for s in bootstrap_servers.split(",") if s.strip()]:
        errors: list[Any] = []
        config: dict[str, Any] = {
            "bootstrap.servers": server, "client.id": "stream-app-access-check", **security.librdkafka_config(),
            "error_cb": errors.append, "logger": _quiet_logger(),
        }
        try:
            client = AdminClient(config)
        except KafkaException as exc:
            said = _librdkafka_said(exc.args[0]) if _librdkafka_error(exc) is not None else str(exc)
            raise KafkaAccessError(security._redact(
                f"a Kafka client cannot be set up with these settings ({security.describe()}): {said}; check that "
                "KAFKA_SSL_CAFILE, KAFKA_SSL_CERTFILE and KAFKA_SSL_KEYFILE are PEM files and that "
                "KAFKA_SSL_KEY_PASSWORD_FILE holds the key's password if it is encrypted")) from None
        del config
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    break  # no answer: the next server
                try:
                    client.list_topics(timeout=min(0.25, left))
                    return  # handshake, login and a request went through
                except KafkaException:
                    pass
                client.poll(0.1)  # serve error_cb: the reason is only reported there
                for error in errors:
                    message = explain_connection_error(error, security, server)
                    if message is not None:
                        raise KafkaAccessError(message) from None
                if any(e.code() != KafkaError._ALL_BROKERS_DOWN for e in errors):
                    break  # refused the connection, or failed otherwise: the next server
        finally:
            del client
