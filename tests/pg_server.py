"""A throwaway PostgreSQL server for the test session: initdb, start, stop, remove.

`start()` finds the server binaries (initdb, pg_ctl, postgres) on PATH or under
/usr/lib/postgresql/*/bin (the newest version), creates a cluster in a fresh directory under
the system temp dir, and starts it on 127.0.0.1 on a free port with its unix socket in that
directory. PostgreSQL refuses to run as root: as root, the cluster belongs to the `postgres`
user (created by the Debian package) and its commands run through `runuser -u postgres --`.

When the binaries, or a way to run them, are missing, `start()` raises `Unavailable` with
the reason; the fixture in conftest.py turns that into a visible skip, or a failure when
SOPKIT_REQUIRE_PG=1 (CI sets it once it has installed PostgreSQL).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

BINARIES = ("initdb", "pg_ctl", "postgres")


class Unavailable(Exception):
    """PostgreSQL cannot be started here; the message says why and what would fix it."""


def find_bin_dir() -> Path | None:
    """The directory holding initdb, pg_ctl and postgres: the newest packaged version, else PATH."""

    def version(path: str) -> tuple[int, ...]:
        name = Path(path).parent.name
        return tuple(int(p) for p in name.split(".") if p.isdigit())

    packaged = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    for directory in packaged:
        if all(os.access(Path(directory, b), os.X_OK) for b in BINARIES):
            return Path(directory)
    found = [shutil.which(b) for b in BINARIES]
    if all(found):
        # the binaries find their share directory relative to where they really live
        return Path(os.path.realpath(str(found[0]))).parent
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class PgServer:
    """A running throwaway cluster; `url` connects as its superuser `postgres` (trust auth)."""

    bin_dir: Path
    root: Path
    port: int
    runas: list[str]

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.runas, *args], capture_output=True, text=True,
                              timeout=120, check=False)

    def stop(self) -> None:
        """Stop the server (immediately: nothing in it is worth keeping) and remove its files."""
        try:
            if (self.data / "postmaster.pid").exists():
                self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m",
                          "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def _runas() -> list[str]:
    """The command prefix to run PostgreSQL binaries as a non-root user (empty if not root)."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise Unavailable("running as root and there is no 'postgres' user to run the server "
                          "as (install the postgresql package, which creates it)") from None
    runuser = shutil.which("runuser")
    if runuser is None:
        raise Unavailable("running as root and `runuser` (util-linux) is missing, so the "
                          "server cannot be run as the 'postgres' user")
    return [runuser, "-u", "postgres", "--"]


def start() -> PgServer:
    """Create and start a cluster; raise Unavailable with the reason when that is impossible."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise Unavailable("PostgreSQL server binaries (initdb, pg_ctl, postgres) not found on "
                          "PATH or under /usr/lib/postgresql/*/bin; install them with "
                          "`apt-get install postgresql`")
    runas = _runas()
    root = Path(tempfile.mkdtemp(prefix="sopkit-pg-"))
    if runas:
        owner = pwd.getpwnam("postgres")
        os.chown(root, owner.pw_uid, owner.pw_gid)
    server = PgServer(bin_dir, root, 0, runas)
    try:
        init = server._run(str(bin_dir / "initdb"), "-D", str(server.data), "-U", "postgres",
                           "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync")
        if init.returncode != 0:
            raise Unavailable(f"initdb failed: {init.stderr.strip() or init.stdout.strip()}")
        log = root / "server.log"
        for _ in range(5):  # a free port can be taken between choosing and binding it
            server.port = _free_port()
            started = server._run(
                str(bin_dir / "pg_ctl"), "-D", str(server.data), "-l", str(log), "-w",
                "-t", "60", "-o",
                f"-c listen_addresses=127.0.0.1 -p {server.port} -k {root} -c fsync=off "
                "-c max_connections=50", "start")
            if started.returncode == 0:
                return server
        text = log.read_text(errors="replace") if log.exists() else started.stderr
        raise Unavailable(f"pg_ctl start failed: {text.strip()[-2000:]}")
    except BaseException:
        server.stop()
        raise
