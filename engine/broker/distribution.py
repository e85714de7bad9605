"""Apache Kafka's broker jars, resolved from Maven Central into a per-version cache.

The release tarball is not needed: the published POM of ``org.apache.kafka:kafka_2.13`` pulls
every broker module at runtime scope. Only the logging binding is missing (it ships in the
tarball alone), so the generated POM adds ``log4j-slf4j-impl``: Kafka 4.x logs through slf4j
1.7 and already brings ``log4j-core`` 2.x as the backend.

Layout of the cache (``$JOBLOG_CACHE_DIR``, else ``$XDG_CACHE_HOME/joblog``, else
``~/.cache/joblog``)::

    kafka-<version>/pom.xml     the generated POM
    kafka-<version>/libs/*.jar  the broker's runtime classpath
    kafka-<version>/COMPLETE    written last: the libs are whole
    kafka-<version>/cds/        class-data-sharing archives, one per JVM build
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from engine.errors import BrokerError

log = logging.getLogger(__name__)

KAFKA_VERSION = "4.3.1"
"""The newest Apache Kafka release whose artifacts all resolve from Maven Central."""

LOG4J_VERSION = "2.25.4"
"""The log4j release Kafka 4.3.1 is built against; its slf4j 1.x binding is added to the POM."""

DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.6.1"
_MARKER = "COMPLETE"

JAVA_HINT = (
    "Kafka 4 needs Java 17 or newer: install a JRE (e.g. `apt-get install "
    "openjdk-17-jre-headless`) or point JAVA_HOME at one"
)
MAVEN_HINT = (
    "Maven downloads the Kafka jars from Maven Central on first use: install it (e.g. "
    "`apt-get install maven`), put `mvn` on PATH or point JOBLOG_MVN at it"
)


@dataclass(frozen=True)
class KafkaDistribution:
    """The resolved jars of one Kafka version.

    Attributes:
        version: the Apache Kafka version.
        home: the version's directory in the cache.
    """

    version: str
    home: Path

    @property
    def libs(self) -> Path:
        """The directory of the broker's jars."""
        return self.home / "libs"

    def classpath(self) -> str:
        """The broker's classpath, jars in sorted order.

        An explicit, stable order (rather than ``libs/*``) keeps class-data-sharing archives
        valid from one start to the next.
        """
        return os.pathsep.join(str(jar) for jar in sorted(self.libs.glob("*.jar")))

    def cds_archive(self, java: str) -> Path:
        """Where the class-data-sharing archive for one JVM build lives.

        An archive only maps into the JVM build that wrote it, so the name is derived from the
        java executable's identity (path, size and modification time).
        """
        real = Path(java).resolve()
        stat = real.stat()
        key = hashlib.sha256(f"{real}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()
        return self.home / "cds" / f"{key[:16]}.jsa"


def cache_root(env: Mapping[str, str] | None = None) -> Path:
    """The directory under which Kafka versions are cached.

    Args:
        env: the environment to read (``os.environ`` when omitted).

    Returns:
        ``$JOBLOG_CACHE_DIR``, else ``$XDG_CACHE_HOME/joblog``, else ``~/.cache/joblog``.
    """
    env = os.environ if env is None else env
    if env.get("JOBLOG_CACHE_DIR"):
        return Path(env["JOBLOG_CACHE_DIR"]).expanduser()
    xdg = env.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "joblog"


def find_java(env: Mapping[str, str] | None = None) -> str:
    """The java executable: ``$JAVA_HOME/bin/java``, else ``java`` on PATH.

    Args:
        env: the environment to read (``os.environ`` when omitted).

    Raises:
        BrokerError: no java executable was found; the message says what to install.
    """
    env = os.environ if env is None else env
    java_home = env.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("java", path=env.get("PATH", ""))
    if found is None:
        where = f"JAVA_HOME ({java_home}) nor PATH" if java_home else "PATH"
        raise BrokerError(f"no `java` executable on {where}. {JAVA_HINT}")
    return found


def find_maven(env: Mapping[str, str] | None = None) -> str:
    """The Maven executable: ``$JOBLOG_MVN``, else ``mvn`` on PATH.

    Args:
        env: the environment to read (``os.environ`` when omitted).

    Raises:
        BrokerError: Maven was not found; the message says what to install.
    """
    env = os.environ if env is None else env
    configured = env.get("JOBLOG_MVN")
    if configured:
        if not os.access(configured, os.X_OK):
            raise BrokerError(f"JOBLOG_MVN={configured!r} is not an executable. {MAVEN_HINT}")
        return configured
    found = shutil.which("mvn", path=env.get("PATH", ""))
    if found is None:
        raise BrokerError(f"no `mvn` executable on PATH. {MAVEN_HINT}")
    return found


def render_pom(version: str, log4j_version: str = LOG4J_VERSION) -> str:
    """The POM (packaging ``pom``) whose runtime dependencies are the broker's classpath.

    The binding's own log4j-api/log4j-core are excluded so that the log4j release Kafka
    declares is the one on the classpath, whatever Kafka version is asked for.

    Args:
        version: the Apache Kafka version.
        log4j_version: the version of ``log4j-slf4j-impl``.
    """
    kafka = escape(version)
    log4j = escape(log4j_version)
    return f"""\
<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by joblog: the runtime classpath of an Apache Kafka {kafka} broker. -->
<project xmlns="http://maven.apache.org/POM/4.0.0"
         xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
         xsi:schemaLocation="http://maven.apache.org/POM/4.0.0 https://maven.apache.org/xsd/maven-4.0.0.xsd">
  <modelVersion>4.0.0</modelVersion>
  <groupId>joblog.local</groupId>
  <artifactId>kafka-broker</artifactId>
  <version>{kafka}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version>
      <scope>runtime</scope>
      <exclusions>
        <exclusion>
          <groupId>org.apache.logging.log4j</groupId>
          <artifactId>log4j-api</artifactId>
        </exclusion>
        <exclusion>
          <groupId>org.apache.logging.log4j</groupId>
          <artifactId>log4j-core</artifactId>
        </exclusion>
      </exclusions>
    </dependency>
  </dependencies>
</project>
"""


def resolve_kafka(
    version: str = KAFKA_VERSION,
    *,
    cache_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> KafkaDistribution:
    """Returns the jars of one Kafka version, downloading them with Maven on first use.

    Concurrent callers (several test sessions, say) are serialised by a lock file, and the
    jars are copied into a scratch directory that is renamed into place, so a download that
    dies half-way leaves nothing that looks complete.

    Args:
        version: the Apache Kafka version.
        cache_dir: the cache root (see :func:`cache_root`).
        env: the environment to read (``os.environ`` when omitted).

    Returns:
        The resolved distribution.

    Raises:
        BrokerError: Maven is missing or could not resolve the artifacts.
    """
    root = cache_dir if cache_dir is not None else cache_root(env)
    dist = KafkaDistribution(version, root / f"kafka-{version}")
    if (dist.home / _MARKER).exists():
        return dist
    dist.home.mkdir(parents=True, exist_ok=True)
    with _locked(dist.home / ".lock"):
        if not (dist.home / _MARKER).exists():
            _download(dist, find_maven(env))
    return dist


def _download(dist: KafkaDistribution, mvn: str) -> None:
    pom = dist.home / "pom.xml"
    pom.write_text(render_pom(dist.version))
    scratch = dist.home / f"libs.partial-{os.getpid()}"
    shutil.rmtree(scratch, ignore_errors=True)
    log.info(
        "Downloading the Apache Kafka %s broker jars from Maven Central into %s "
        "(first use of this version only)",
        dist.version,
        dist.libs,
    )
    started = time.monotonic()
    command = [
        mvn,
        "-B",
        "-q",
        "-f",
        str(pom),
        f"{DEPENDENCY_PLUGIN}:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={scratch}",
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise BrokerError(f"could not run {mvn}: {exc}. {MAVEN_HINT}") from exc
    if result.returncode != 0 or not any(scratch.glob("kafka_2.13-*.jar")):
        shutil.rmtree(scratch, ignore_errors=True)
        output = (result.stdout + result.stderr).strip().splitlines()
        tail = "\n".join(output[-25:])
        raise BrokerError(
            f"Maven could not resolve Apache Kafka {dist.version} "
            f"(exit {result.returncode}); is Maven Central reachable and does the version "
            f"exist? Command: {' '.join(command)}\n{tail}"
        )
    shutil.rmtree(dist.libs, ignore_errors=True)
    scratch.rename(dist.libs)
    (dist.home / _MARKER).write_text(f"kafka {dist.version}\n")
    log.info(
        "Resolved %d jars for Apache Kafka %s in %.1f s",
        len(list(dist.libs.glob("*.jar"))),
        dist.version,
        time.monotonic() - started,
    )


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
