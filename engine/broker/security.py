"""SASL/SCRAM (and optionally TLS) with ACLs enforced, for a local broker or cluster.

A broker given a :class:`BrokerSecurity` has one client listener, ``SASL_PLAINTEXT`` (or
``SASL_SSL``) with SCRAM-SHA-512, and Kafka's ``StandardAuthorizer``: a principal may do only
what an ACL allows (``allow.everyone.if.no.acl.found=false``). The admin principal is a super
user; the broker uses it for its own inter-broker connections. Every other principal of
``users`` gets a SCRAM credential when the storage is formatted (``kafka-storage format
--add-scram``) and again through the Admin API after each start, so users added to an
existing data directory work too. Which ACLs each joblog service needs: :mod:`engine.acls`.

The controller listener (the KRaft quorum, on 127.0.0.1 only) authenticates with SASL/PLAIN
and the admin's password from the broker's own configuration, because SCRAM credentials live
in the metadata log the controllers serve and cannot authenticate the controllers themselves.

TLS: ``tls=True`` makes a certificate authority and a broker certificate (for 127.0.0.1 and
``localhost``) with the JDK's ``keytool`` once per data directory (``tls/``); clients trust
``tls/ca.pem`` (``ssl.ca.location``).
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # no __all__ in the stubs
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialAlteration,
    UserScramCredentialUpsertion,
)

from engine.errors import BrokerError, ConfigurationError

SCRAM_MECHANISM = "SCRAM-SHA-512"
STANDARD_AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
ADMIN_USER = "admin"
#: SCRAM iterations of the credentials joblog creates (Kafka's minimum for SHA-512 is 4096).
SCRAM_ITERATIONS = 8192

_SCRAM_LOGIN = "org.apache.kafka.common.security.scram.ScramLoginModule"
_PLAIN_LOGIN = "org.apache.kafka.common.security.plain.PlainLoginModule"
_KEYTOOL_TIMEOUT_S = 60.0


def new_password() -> str:
    """A random password of URL-safe characters (safe inside JAAS and ``--add-scram``)."""
    return secrets.token_urlsafe(18)


@dataclass(frozen=True)
class TlsFiles:
    """The key material of a TLS listener, made by :func:`make_tls_files`.

    Attributes:
        ca_pem: the certificate authority's certificate (clients' ``ssl.ca.location``).
        keystore: the broker's key and certificate chain (PKCS12).
        truststore: the authority's certificate (PKCS12), for the broker's own connections.
        password: the password of both stores.
    """

    ca_pem: Path
    keystore: Path
    truststore: Path
    password: str


@dataclass(frozen=True)
class BrokerSecurity:
    """Authentication and authorization of a local broker's client listener.

    Attributes:
        users: SCRAM users to create, name -> password (one per joblog service principal).
        admin_password: the super user's password; a data directory keeps the one it was
            first started with (``sasl-admin.password``), whatever is given later.
        admin_user: the super user (the broker's own principal, and the operator's).
        tls: encrypt the client listener too (``SASL_SSL``).
    """

    users: Mapping[str, str] = field(default_factory=dict)
    admin_password: str = field(default_factory=new_password)
    admin_user: str = ADMIN_USER
    tls: bool = False

    def __post_init__(self) -> None:
        for name, password in {self.admin_user: self.admin_password, **self.users}.items():
            if not name or any(char in name for char in ",=[]\"' "):
                raise ConfigurationError(f"SCRAM user name {name!r} must be plain characters")
            if not password or any(char in password for char in ",=[]\"'\\ "):
                raise ConfigurationError(
                    f"the password of SCRAM user {name!r} has characters the Kafka tools "
                    "cannot quote (, = [ ] quotes, backslash, space)"
                )

    @property
    def protocol(self) -> str:
        """The client listener's security protocol (and listener name)."""
        return "SASL_SSL" if self.tls else "SASL_PLAINTEXT"

    def credentials(self) -> dict[str, str]:
        """Every SCRAM user, the admin included: name -> password."""
        return {self.admin_user: self.admin_password, **self.users}

    def password(self, user: str) -> str:
        """The password of ``user``.

        Raises:
            ConfigurationError: no such user.
        """
        try:
            return self.credentials()[user]
        except KeyError:
            raise ConfigurationError(
                f"no SCRAM user {user!r} on this broker (users: {sorted(self.credentials())})"
            ) from None

    def server_properties(self, tls_files: TlsFiles | None = None) -> dict[str, str]:
        """The broker settings of the secured listeners (over :func:`server_properties`'s).

        Args:
            tls_files: the key material, required when :attr:`tls` is set.

        Raises:
            ConfigurationError: TLS is on and no key material was given.
        """
        listener = self.protocol.lower()
        admin = f'username="{self.admin_user}" password="{self.admin_password}"'
        props = {
            "sasl.enabled.mechanisms": SCRAM_MECHANISM,
            "sasl.mechanism.inter.broker.protocol": SCRAM_MECHANISM,
            f"listener.name.{listener}.scram-sha-512.sasl.jaas.config": (
                f"{_SCRAM_LOGIN} required {admin};"
            ),
            "sasl.mechanism.controller.protocol": "PLAIN",
            "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
            "listener.name.controller.plain.sasl.jaas.config": (
                f'{_PLAIN_LOGIN} required {admin} user_{self.admin_user}="{self.admin_password}";'
            ),
            "authorizer.class.name": STANDARD_AUTHORIZER,
            "super.users": f"User:{self.admin_user}",
            "allow.everyone.if.no.acl.found": "false",
        }
        if self.tls:
            if tls_files is None:
                raise ConfigurationError("a SASL_SSL listener needs its key material")
            props.update(
                {
                    f"listener.name.{listener}.ssl.keystore.location": str(tls_files.keystore),
                    f"listener.name.{listener}.ssl.keystore.type": "PKCS12",
                    f"listener.name.{listener}.ssl.keystore.password": tls_files.password,
                    f"listener.name.{listener}.ssl.key.password": tls_files.password,
                    f"listener.name.{listener}.ssl.truststore.location": str(tls_files.truststore),
                    f"listener.name.{listener}.ssl.truststore.type": "PKCS12",
                    f"listener.name.{listener}.ssl.truststore.password": tls_files.password,
                }
            )
        return props

    def format_arguments(self) -> list[str]:
        """The ``kafka-storage format`` arguments that create every SCRAM user."""
        arguments: list[str] = []
        for name, password in self.credentials().items():
            arguments += [
                "--add-scram",
                f"{SCRAM_MECHANISM}=[name={name},password={password},"
                f"iterations={SCRAM_ITERATIONS}]",
            ]
        return arguments

    def client_settings(
        self, user: str | None = None, *, ca_location: Path | None = None
    ) -> dict[str, str]:
        """The librdkafka settings of a client authenticating as ``user`` (default: admin).

        Args:
            user: the SCRAM user.
            ca_location: the authority to trust (TLS only).

        Raises:
            ConfigurationError: no such user.
        """
        name = user or self.admin_user
        settings = {
            "security.protocol": self.protocol,
            "sasl.mechanisms": SCRAM_MECHANISM,
            "sasl.username": name,
            "sasl.password": self.password(name),
        }
        if self.tls and ca_location is not None:
            settings["ssl.ca.location"] = str(ca_location)
        return settings


def client_environment(settings: Mapping[str, str]) -> dict[str, str]:
    """librdkafka settings as the ``JOBLOG_KAFKA_*`` variables every joblog process reads."""
    return {
        "JOBLOG_KAFKA_" + key.upper().replace(".", "_"): value for key, value in settings.items()
    }


def make_tls_files(directory: Path, java: str) -> TlsFiles:
    """Makes (once) a certificate authority and a broker certificate with ``keytool``.

    The broker's certificate names ``127.0.0.1`` and ``localhost`` as subject alternative
    names, so clients verify the broker's address (librdkafka's default
    ``ssl.endpoint.identification.algorithm=https``).

    Args:
        directory: where the files go (``ca.pem``, ``ca.p12``, ``broker.p12``, ``store.password``).
        java: the java executable; ``keytool`` is taken from the same directory.

    Raises:
        BrokerError: keytool is missing or failed.
    """
    directory.mkdir(parents=True, exist_ok=True)
    password_file = directory / "store.password"
    files = TlsFiles(
        ca_pem=directory / "ca.pem",
        keystore=directory / "broker.p12",
        truststore=directory / "ca.p12",
        password=password_file.read_text().strip() if password_file.exists() else "",
    )
    if files.password and files.ca_pem.exists() and files.keystore.exists():
        return files
    password = new_password()
    password_file.write_text(password + "\n")
    password_file.chmod(0o600)
    for stale in (files.ca_pem, files.keystore, files.truststore, directory / "ca-key.p12"):
        stale.unlink(missing_ok=True)
    keytool = str(Path(java).resolve().parent / "keytool")
    store = ["-storetype", "PKCS12", "-storepass", password, "-keypass", password]
    authority = directory / "ca-key.p12"
    csr = directory / "broker.csr"
    signed = directory / "broker.pem"
    steps = [
        ["-genkeypair", "-alias", "ca", "-keyalg", "RSA", "-keysize", "2048", "-validity", "3650",
         "-dname", "CN=joblog local CA", "-ext", "bc:c", "-keystore", str(authority), *store],
        ["-exportcert", "-alias", "ca", "-rfc", "-keystore", str(authority),
         "-storepass", password, "-file", str(files.ca_pem)],
        ["-importcert", "-noprompt", "-alias", "ca", "-file", str(files.ca_pem),
         "-keystore", str(files.truststore), *store],
        ["-genkeypair", "-alias", "broker", "-keyalg", "RSA", "-keysize", "2048",
         "-validity", "3650", "-dname", "CN=127.0.0.1", "-keystore", str(files.keystore), *store],
        ["-certreq", "-alias", "broker", "-keystore", str(files.keystore),
         "-storepass", password, "-file", str(csr)],
        ["-gencert", "-alias", "ca", "-keystore", str(authority), "-storepass", password,
         "-infile", str(csr), "-outfile", str(signed), "-rfc", "-validity", "3650",
         "-ext", "SAN=ip:127.0.0.1,dns:localhost"],
        ["-importcert", "-noprompt", "-alias", "ca", "-file", str(files.ca_pem),
         "-keystore", str(files.keystore), *store],
        ["-importcert", "-noprompt", "-alias", "broker", "-file", str(signed),
         "-keystore", str(files.keystore), *store],
    ]  # fmt: skip
    for step in steps:
        _keytool(keytool, step)
    csr.unlink(missing_ok=True)
    return TlsFiles(files.ca_pem, files.keystore, files.truststore, password)


def _keytool(keytool: str, arguments: list[str]) -> None:
    try:
        result = subprocess.run(
            [keytool, *arguments], capture_output=True, text=True, timeout=_KEYTOOL_TIMEOUT_S
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BrokerError(f"keytool {arguments[0]} failed: {exc}") from exc
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()
        raise BrokerError(f"keytool {arguments[0]} failed (exit {result.returncode}): {output}")


def upsert_users(admin: AdminClient, users: Mapping[str, str], timeout: float = 15.0) -> None:
    """Creates or updates SCRAM-SHA-512 credentials through the Admin API.

    Args:
        admin: an admin client authenticated as a super user.
        users: name -> password.
        timeout: seconds for the request.

    Raises:
        BrokerError: the cluster refused a credential.
    """
    if not users:
        return
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS)
    alterations: list[UserScramCredentialAlteration] = [
        UserScramCredentialUpsertion(name, info, password.encode())
        for name, password in users.items()
    ]
    futures = admin.alter_user_scram_credentials(alterations, request_timeout=timeout)
    for name, future in futures.items():
        try:
            future.result(timeout=timeout)
        except KafkaException as exc:
            raise BrokerError(f"could not set the SCRAM credential of {name}: {exc}") from exc
