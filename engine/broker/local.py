"""A single-node Apache Kafka broker (KRaft, combined broker+controller) run from local jars.

Everything the broker owns lives in its data directory::

    server.properties   generated on every start
    log4j2.properties   generated on every start
    cluster.id          the KRaft cluster id, chosen once; restarts reuse it
    kafka-logs/         partitions and the metadata log (formatted once)
    broker.pid          pid of the running JVM, so other processes can stop or query it
    broker.log          the broker's log of the current run (the previous run's: broker.log.1)
    sasl-admin.password a secured broker's super-user password, chosen once (mode 0600)
    tls/                a SASL_SSL broker's certificate authority and keystores, made once
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from engine.broker.distribution import (
    JAVA_HINT,
    KAFKA_VERSION,
    KafkaDistribution,
    find_java,
    resolve_kafka,
)
from engine.broker.properties import (
    LOG4J2_PROPERTIES,
    NODE_ID,
    SINGLE_NODE_DEFAULTS,
    client_listener,
    is_cluster_id,
    listener_port,
    new_cluster_id,
    parse_properties,
    render_properties,
    server_properties,
)
from engine.broker.security import BrokerSecurity, TlsFiles, make_tls_files, upsert_users
from engine.errors import BrokerError

log = logging.getLogger(__name__)

DEFAULT_DATA_DIR = Path(".joblog") / "kafka"
HOST = "127.0.0.1"

# A development broker shares two cores with the processes it serves. Measured there, the
# client compiler alone (no C2) halves the CPU a start costs and used less CPU, not more, over
# a 200k-record produce/consume run; the serial collector has the least overhead on a 512 MiB
# heap. `-XX:TieredStopAtLevel=4` in `jvm_options` brings C2 back for long benchmarks.
JVM_OPTIONS: tuple[str, ...] = (
    "-Xms256m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)
"""Options of the broker JVM; ``jvm_options`` given to :class:`LocalBroker` come after them
(a collector chosen there replaces the serial one)."""

STOP_TIMEOUT = 10.0
_ARCHIVE_FLAG = "-XX:ArchiveClassesAtExit"
_GC_CHOICE = re.compile(r"^-XX:\+Use\w+GC$")
_ARCHIVE_GRACE = 30.0
_PARTIAL_ARCHIVE = "classes.jsa.partial"
_BIND_FAILURE = "Address already in use"


@dataclass(frozen=True)
class BrokerStatus:
    """What a data directory's broker is doing, as seen from any process.

    Attributes:
        data_dir: the broker's data directory.
        pid: pid of the running broker JVM, or None when it is not running.
        bootstrap_servers: the address clients use, once the broker has been configured.
        log_file: the broker's log of its current (or last) run.
    """

    data_dir: Path
    pid: int | None
    bootstrap_servers: str | None
    log_file: Path

    @property
    def running(self) -> bool:
        """Whether a broker process is alive for this data directory."""
        return self.pid is not None


class LocalBroker:
    """A local single-node Kafka broker for the demo and the tests.

    The first start of a Kafka version downloads its jars with Maven (see
    :func:`engine.broker.distribution.resolve_kafka`); later starts take a few seconds. The first
    start on a JVM build also records a class-data-sharing archive (written when that broker
    stops) that later starts map instead of loading and verifying every class again.

    Example::

        with LocalBroker(tmp_path / "kafka") as broker:
            settings = Settings(bootstrap_servers=broker.bootstrap_servers)

    Args:
        data_dir: where the broker keeps its configuration, data, pid file and log.
        port: port of the client listener. None reuses the port of the last run from this data
            directory when it is free, else picks a free one; 0 always picks a free one.
        version: the Apache Kafka version to run.
        cache_dir: the jar cache root (default: see :func:`engine.broker.distribution.cache_root`).
        properties: broker settings that win over the generated ones.
        jvm_options: extra JVM options, after :data:`JVM_OPTIONS`.
        startup_timeout: seconds to wait for the broker to answer once its JVM runs.
        node_id / controller_port / voters / cluster_id / defaults: a node of a
            :class:`~engine.broker.cluster.LocalCluster` (its id, its fixed controller port,
            the quorum, the cluster's id and replication settings); a single broker leaves
            them alone.
        security: SASL/SCRAM (and TLS) on the client listener with ACLs enforced
            (:mod:`engine.broker.security`); clients then need :meth:`client_settings`.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] = DEFAULT_DATA_DIR,
        *,
        port: int | None = None,
        version: str = KAFKA_VERSION,
        cache_dir: Path | None = None,
        properties: Mapping[str, str] | None = None,
        jvm_options: Sequence[str] = (),
        startup_timeout: float = 90.0,
        node_id: int = NODE_ID,
        controller_port: int | None = None,
        voters: str | None = None,
        cluster_id: str | None = None,
        defaults: Mapping[str, str] = SINGLE_NODE_DEFAULTS,
        security: BrokerSecurity | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.security = security
        self.node_id = node_id
        self.controller_port = controller_port
        self.voters = voters
        self.given_cluster_id = cluster_id
        self.defaults = dict(defaults)
        self.port = port
        self.version = version
        self.cache_dir = cache_dir
        self.properties = dict(properties or {})
        self.jvm_options = tuple(jvm_options)
        self.startup_timeout = startup_timeout
        self.started_in: float | None = None
        """Seconds the last :meth:`start` took, jar download (if any) included."""
        self._process: subprocess.Popen[bytes] | None = None
        self._detached = True
        self._archiving = False
        self._remove_on_stop = False

    @classmethod
    def temporary(cls, **options: Any) -> LocalBroker:
        """A broker in a new temporary data directory that :meth:`stop` deletes.

        Args:
            **options: the keyword arguments of :class:`LocalBroker`.
        """
        broker = cls(tempfile.mkdtemp(prefix="joblog-kafka-"), **options)
        broker._remove_on_stop = True
        return broker

    @property
    def properties_file(self) -> Path:
        """The broker's ``server.properties``."""
        return self.data_dir / "server.properties"

    @property
    def log_file(self) -> Path:
        """The broker's log of its current (or last) run."""
        return self.data_dir / "broker.log"

    @property
    def pid_file(self) -> Path:
        """The file holding the running broker's pid."""
        return self.data_dir / "broker.pid"

    @property
    def log_dir(self) -> Path:
        """Where the broker keeps partitions and the metadata log."""
        return self.data_dir / "kafka-logs"

    @property
    def bootstrap_servers(self) -> str:
        """``host:port`` of the client listener.

        Raises:
            BrokerError: the broker has never been configured in this data directory.
        """
        servers = self._configured_bootstrap()
        if servers is None:
            raise BrokerError(f"no broker has been started from {self.data_dir} yet")
        return servers

    def client_settings(self, user: str | None = None) -> dict[str, str]:
        """The librdkafka settings a client of this broker needs besides the bootstrap servers.

        Args:
            user: the SCRAM user to authenticate as (default: the admin); ignored, like the
                result, by a broker without :attr:`security`.

        Raises:
            ConfigurationError: a secured broker has no such user.
        """
        if self.security is None:
            return {}
        security = self._settled_security(self.security)
        ca = self.tls_directory / "ca.pem" if security.tls else None
        return security.client_settings(user, ca_location=ca)

    @property
    def tls_directory(self) -> Path:
        """Where a SASL_SSL broker keeps its certificate authority and keystores."""
        return self.data_dir / "tls"

    @property
    def pid(self) -> int | None:
        """Pid of the running broker JVM (started by this or another process), or None."""
        if self._process is not None and self._process.poll() is None:
            return self._process.pid
        return self._running_pid()

    def is_running(self) -> bool:
        """Whether a broker JVM is alive for this data directory."""
        return self.pid is not None

    def status(self) -> BrokerStatus:
        """The broker's pid and address, read from its data directory."""
        return BrokerStatus(
            data_dir=self.data_dir,
            pid=self.pid,
            bootstrap_servers=self._configured_bootstrap(),
            log_file=self.log_file,
        )

    def start(self, *, detach: bool = False) -> LocalBroker:
        """Starts the broker and waits until it answers metadata requests.

        Args:
            detach: keep the broker running after this Python process exits (the CLI's
                ``broker start``). When False the broker is tied to the calling thread's
                process (where ``setpriv`` exists) so an interrupted test run leaves no JVM.

        Returns:
            This broker, for chaining.

        Raises:
            BrokerError: java or Maven is missing, a broker already runs from this data
                directory, the port is taken, or the broker did not come up in time (the
                message ends with the tail of its log).
        """
        started = time.monotonic()
        for attempt in range(3):
            formatted, chosen = self.launch(detach=detach)
            try:
                admin = self.wait_ready()
                if formatted:
                    _create_offsets_topic(admin)
                self.add_users()
                break
            except BrokerError:
                exited = self._process is not None and self._process.poll() is not None
                if not (chosen and exited and attempt < 2 and _BIND_FAILURE in self.log_tail()):
                    self._kill_quietly()
                    raise
                log.info("Port taken while the broker started; trying other ports")
        self.started_in = time.monotonic() - started
        log.debug(
            "Apache Kafka %s broker ready at %s in %.1f s (pid %s, data dir %s)",
            self.version,
            self.bootstrap_servers,
            self.started_in,
            self.pid,
            self.data_dir,
        )
        return self

    def launch(self, *, detach: bool = False) -> tuple[bool, bool]:
        """Configures, formats (once) and launches the broker's JVM without waiting for it.

        A node of a cluster answers only once a majority of the quorum runs, so a cluster
        launches every node first and then waits (:meth:`wait_ready`).

        Returns:
            Whether the storage was formatted now (a new broker), and whether the client port
            was picked here (so another may be tried if it was taken meanwhile).

        Raises:
            BrokerError: java or Maven is missing, or a broker already runs from this data
                directory, or the port is taken.
        """
        running = self.pid
        if running is not None:
            raise BrokerError(
                f"a broker is already running from {self.data_dir} (pid {running}) "
                f"at {self._configured_bootstrap()}"
            )
        java = find_java()
        dist = resolve_kafka(self.version, cache_dir=self.cache_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        broker_port, controller_port, chosen = self._ports()
        self._configure(broker_port, controller_port, java)
        formatted = self._format(java, dist)
        self._launch(java, dist, detach=detach)
        return formatted, chosen

    def wait_ready(self, timeout: float | None = None) -> AdminClient:
        """Waits until the launched broker answers metadata requests.

        Args:
            timeout: seconds (default: the broker's ``startup_timeout``).

        Returns:
            An admin client connected to it.

        Raises:
            BrokerError: the JVM exited, or did not answer in time (with the log's tail).
        """
        admin = self._wait_ready(time.monotonic() + (timeout or self.startup_timeout))
        self._drop_rejected_archive(
            resolve_kafka(self.version, cache_dir=self.cache_dir).cds_archive(find_java())
        )
        return admin

    def add_users(self, users: Mapping[str, str] | None = None) -> None:
        """Creates or updates SCRAM users through the Admin API (as the admin).

        Args:
            users: name -> password (default: the users of :attr:`security`, so that users
                given to a data directory formatted before them exist too).

        Raises:
            BrokerError: the broker is not secured, or refused a credential.
        """
        if self.security is None:
            if users:
                raise BrokerError("this broker has no SASL listener for SCRAM users")
            return
        config: dict[str, str | int | float | bool] = {
            "bootstrap.servers": self.bootstrap_servers,
            "log_level": 0,
            **self.client_settings(),
        }
        admin = AdminClient(config)
        upsert_users(admin, dict(self.security.users if users is None else users))

    def kill(self) -> None:
        """SIGKILLs the broker's JVM (a crash: no clean shutdown) and forgets it."""
        pid = self.pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _wait_exit(pid, self._process if self._process is not None else None, 10.0)
        self._archiving = False
        self.data_dir.joinpath(_PARTIAL_ARCHIVE).unlink(missing_ok=True)
        self._forget()

    def ensure_started(self, *, detach: bool = False) -> LocalBroker:
        """Starts the broker unless one already runs from this data directory.

        A broker another process is still starting may not answer yet: follow with
        :func:`engine.admin.wait_for_cluster` before using it.

        Args:
            detach: as for :meth:`start`, when a broker has to be started.

        Returns:
            This broker, for chaining.
        """
        if self.is_running():
            return self
        return self.start(detach=detach)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stops the broker: SIGTERM, then SIGKILL if it is still alive after ``timeout``.

        Works on a broker started by another process (through the pid file). Does nothing when
        no broker runs. A :meth:`temporary` broker's data directory is deleted.

        Args:
            timeout: seconds to wait for a clean shutdown before killing.
        """
        self._halt(timeout)
        if self._remove_on_stop:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def wait(self, timeout: float | None = None) -> int | None:
        """Waits for a broker this object started to exit.

        Args:
            timeout: seconds to wait; None waits for as long as it runs.

        Returns:
            The JVM's exit code, or None if it still runs after ``timeout`` (or was not
            started by this object).
        """
        if self._process is None:
            return None
        try:
            return self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def restart(self) -> LocalBroker:
        """Stops and starts the broker on the same data directory and port."""
        detach = self._detached
        self._halt(STOP_TIMEOUT)
        return self.start(detach=detach)

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the broker's log (empty when there is none)."""
        try:
            with self.log_file.open("rb") as handle:
                handle.seek(0, os.SEEK_END)
                handle.seek(max(0, handle.tell() - 64 * 1024))
                text = handle.read().decode(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"LocalBroker({str(self.data_dir)!r}, version={self.version!r})"

    def _halt(self, timeout: float) -> None:
        own = self._process if self._process is not None and self._process.poll() is None else None
        pid = own.pid if own is not None else self._running_pid()
        if pid is None:
            self._forget()
            return
        archiving = self._archiving or _ARCHIVE_FLAG in _cmdline(pid)
        grace = timeout + (_ARCHIVE_GRACE if archiving else 0.0)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        clean = _wait_exit(pid, own, grace)
        if not clean:
            log.warning("Broker pid %s ignored SIGTERM for %.0f s; killing it", pid, grace)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _wait_exit(pid, own, 10.0)
        if archiving:
            self._install_archive(keep=clean)
        self._forget()

    def _configured_bootstrap(self) -> str | None:
        try:
            props = parse_properties(self.properties_file.read_text())
        except FileNotFoundError:
            return None
        listener = client_listener(props)
        return listener[1] if listener else None

    def _previous_ports(self) -> tuple[int | None, int | None]:
        try:
            props = parse_properties(self.properties_file.read_text())
        except FileNotFoundError:
            return None, None
        listener = client_listener(props)
        client = listener_port(props, listener[0]) if listener else None
        return client, listener_port(props, "CONTROLLER")

    def _settled_security(self, security: BrokerSecurity) -> BrokerSecurity:
        """``security`` with the admin password this data directory was first started with.

        The password is in the metadata log from the first format on and the broker's own
        connections authenticate with it, so a later run must keep it.
        """
        stored = self.data_dir / "sasl-admin.password"
        if stored.exists():
            password = stored.read_text().strip()
            if password and password != security.admin_password:
                return replace(security, admin_password=password)
            return security
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(stored, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(security.admin_password + "\n")
        return security

    def _ports(self) -> tuple[int, int, bool]:
        """The broker and controller ports, and whether the broker port was picked here."""
        previous_broker, previous_controller = self._previous_ports()
        if self.port:
            broker, chosen = self.port, False
            if not _port_free(broker):
                raise BrokerError(
                    f"port {broker} on {HOST} is in use: is another broker running? "
                    "Stop it or choose another port"
                )
        elif self.port is None and previous_broker and _port_free(previous_broker):
            broker, chosen = previous_broker, False
        else:
            broker, chosen = _free_port(avoid=()), True
        if self.controller_port:
            controller = self.controller_port
        elif (
            previous_controller
            and previous_controller != broker
            and _port_free(previous_controller)
        ):
            controller = previous_controller
        else:
            controller = _free_port(avoid=(broker,))
        return broker, controller, chosen

    def _configure(self, broker_port: int, controller_port: int, java: str) -> None:
        overrides = dict(self.properties)
        protocol = controller_protocol = "PLAINTEXT"
        if self.security is not None:
            security = self._settled_security(self.security)
            tls: TlsFiles | None = None
            if security.tls:
                tls = make_tls_files(self.tls_directory, java)
            overrides = {**security.server_properties(tls), **overrides}
            protocol, controller_protocol = security.protocol, "SASL_PLAINTEXT"
        props = server_properties(
            log_dir=self.log_dir,
            broker_port=broker_port,
            controller_port=controller_port,
            host=HOST,
            overrides=overrides,
            node_id=self.node_id,
            voters=self.voters,
            defaults=self.defaults,
            protocol=protocol,
            controller_protocol=controller_protocol,
        )
        self.properties_file.write_text(
            render_properties(props, header="Written by joblog on every start; edits are lost.")
        )
        (self.data_dir / "log4j2.properties").write_text(LOG4J2_PROPERTIES)

    def _cluster_id(self) -> str:
        if self.given_cluster_id:
            return self.given_cluster_id
        meta = self.log_dir / "meta.properties"
        if meta.exists():
            formatted = parse_properties(meta.read_text()).get("cluster.id", "")
            if is_cluster_id(formatted):
                return formatted
        id_file = self.data_dir / "cluster.id"
        if id_file.exists() and is_cluster_id(id_file.read_text().strip()):
            return id_file.read_text().strip()
        cluster_id = new_cluster_id()
        id_file.write_text(cluster_id + "\n")
        return cluster_id

    def _format(self, java: str, dist: KafkaDistribution) -> bool:
        """Formats the storage of a new data directory; returns whether it did."""
        cluster_id = self._cluster_id()
        (self.data_dir / "cluster.id").write_text(cluster_id + "\n")
        if (self.log_dir / "meta.properties").exists():
            return False
        # A short-lived tool: the client compiler alone starts it fastest.
        command = [
            java,
            "-Xmx256m",
            "-XX:TieredStopAtLevel=1",
            "-XX:+UseSerialGC",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
            "kafka.tools.StorageTool",
            "format",
            "--cluster-id",
            cluster_id,
            "--config",
            str(self.properties_file),
            "--ignore-formatted",
        ]
        if self.security is not None:
            command += self._settled_security(self.security).format_arguments()
        try:
            result = subprocess.run(
                command, capture_output=True, text=True, timeout=120, env=_java_env(dist)
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BrokerError(f"formatting {self.log_dir} failed: {exc}") from exc
        if result.returncode != 0:
            output = "\n".join((result.stdout + result.stderr).strip().splitlines()[-20:])
            raise BrokerError(
                f"formatting {self.log_dir} failed (exit {result.returncode}):\n{output}"
                + _java_hint(output)
            )
        return True

    def _launch(self, java: str, dist: KafkaDistribution, *, detach: bool) -> None:
        archive = dist.cds_archive(java)
        partial = self.data_dir / _PARTIAL_ARCHIVE
        if archive.exists():
            sharing = [f"-XX:SharedArchiveFile={archive}"]
            self._archiving = False
        else:
            partial.unlink(missing_ok=True)
            sharing = [f"{_ARCHIVE_FLAG}={partial}"]
            self._archiving = True
        command = [
            java,
            *sharing,
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.data_dir}",
            *jvm_options(self.jvm_options),
            "kafka.Kafka",
            str(self.properties_file),
        ]
        setpriv = shutil.which("setpriv")
        if not detach and setpriv is not None:
            # The JVM gets SIGTERM when the process that started it dies, however it dies.
            command = [setpriv, "--pdeathsig", "TERM", *command]
        if self.log_file.exists() and self.log_file.stat().st_size:
            os.replace(self.log_file, self.log_file.with_name(self.log_file.name + ".1"))
        with self.log_file.open("wb") as out:
            try:
                self._process = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=self.data_dir,
                    env=_java_env(dist),
                    start_new_session=True,
                )
            except OSError as exc:
                raise BrokerError(f"could not run {java}: {exc}. {JAVA_HINT}") from exc
        self._detached = detach
        self.pid_file.write_text(f"{self._process.pid}\n")

    def _wait_ready(self, deadline: float) -> AdminClient:
        process = self._process
        assert process is not None
        props = parse_properties(self.properties_file.read_text())
        listener = client_listener(props)
        port = listener_port(props, listener[0]) if listener else None
        assert port is not None
        admin: AdminClient | None = None
        while True:
            code = process.poll()
            if code is not None:
                tail = self.log_tail()
                raise BrokerError(
                    f"the broker exited with code {code} while starting; last lines of "
                    f"{self.log_file}:\n{tail}" + _java_hint(tail)
                )
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"the broker did not answer on {HOST}:{port} within "
                    f"{self.startup_timeout:.0f} s; last lines of {self.log_file}:\n"
                    f"{self.log_tail()}"
                )
            if _port_open(port):
                if admin is None:
                    # The probe's own connection errors are expected; keep them off stderr.
                    config: dict[str, str | int | float | bool] = {
                        "bootstrap.servers": f"{HOST}:{port}",
                        "log_level": 0,
                        **self.client_settings(),
                    }
                    admin = AdminClient(config)
                with contextlib.suppress(KafkaException):
                    if admin.list_topics(timeout=1).brokers:
                        return admin
            time.sleep(0.05)

    def _running_pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        if not _alive(pid):
            return None
        cmdline = _cmdline(pid)
        if cmdline and ("kafka.Kafka" not in cmdline or str(self.properties_file) not in cmdline):
            return None
        return pid

    def _kill_quietly(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._archiving = False
        self._forget()

    def _forget(self) -> None:
        self._process = None
        self._archiving = False
        self.pid_file.unlink(missing_ok=True)

    def _drop_rejected_archive(self, archive: Path) -> None:
        """Deletes an archive the JVM refused (jars or JVM changed) so the next run records one."""
        if self._archiving:
            return
        with contextlib.suppress(FileNotFoundError), self.log_file.open("rb") as handle:
            if b"Unable to use shared archive" in handle.read(8192):
                log.info("The JVM rejected %s; the next start records a new one", archive)
                archive.unlink(missing_ok=True)

    def _install_archive(self, *, keep: bool) -> None:
        partial = self.data_dir / _PARTIAL_ARCHIVE
        if not partial.exists():
            return
        if not keep:
            partial.unlink(missing_ok=True)
            return
        try:
            archive = resolve_kafka(self.version, cache_dir=self.cache_dir).cds_archive(find_java())
            archive.parent.mkdir(parents=True, exist_ok=True)
            os.replace(partial, archive)
            log.info("Recorded a class-data-sharing archive for faster starts: %s", archive)
        except (OSError, BrokerError) as exc:
            log.warning("Could not keep the class-data-sharing archive: %s", exc)
            partial.unlink(missing_ok=True)


def jvm_options(extra: Sequence[str] = ()) -> list[str]:
    """The broker JVM's options: :data:`JVM_OPTIONS`, then ``extra``.

    A garbage collector chosen in ``extra`` replaces the default one (the JVM refuses two).
    """
    chooses_gc = any(_GC_CHOICE.match(option) for option in extra)
    defaults = [option for option in JVM_OPTIONS if not (chooses_gc and _GC_CHOICE.match(option))]
    return [*defaults, *extra]


def _java_env(dist: KafkaDistribution) -> dict[str, str]:
    # The classpath goes through the environment so that `ps` shows a readable command line.
    return {**os.environ, "CLASSPATH": dist.classpath()}


def _create_offsets_topic(admin: AdminClient) -> None:
    """Makes a new broker create its consumer-offsets topic now.

    A coordinator lookup creates the topic; doing it here spares the first consumer group the
    client's retry back-off (a second or two) while the broker creates it.
    """
    with contextlib.suppress(KafkaException):
        futures = admin.describe_consumer_groups(["joblog-warmup"], request_timeout=5)
        for future in futures.values():
            future.exception()  # waits; the group's description itself does not matter


def _java_hint(output: str) -> str:
    if "UnsupportedClassVersionError" in output:
        return f"\n{JAVA_HINT}"
    return ""


def _free_port(avoid: Sequence[int]) -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((HOST, 0))
            port: int = sock.getsockname()[1]
        if port not in avoid:
            return port


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _wait_exit(pid: int, own: subprocess.Popen[bytes] | None, timeout: float) -> bool:
    if own is not None:
        try:
            own.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True
