"""An embedded Postgres server for the local stack and the tests.

Uses the Postgres binaries shipped in the `pgserver` wheel, but runs the cluster itself: TCP on
127.0.0.1 with password (SCRAM) authentication, so tenant roles really need their own passwords and
the `postgres` provider's isolation is the one a real server enforces. As root, the server runs as an
unprivileged system user (Postgres refuses to run as root), the way pgserver does it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")  # pgserver's platformdirs, harmless here

from pgserver import _commands  # noqa: E402

POSTGRES_BIN_PATH = _commands.POSTGRES_BIN_PATH
initdb = _commands.initdb  # type: ignore[attr-defined]  # made at import time by pgserver
pg_ctl = _commands.pg_ctl  # type: ignore[attr-defined]

_RUN_AS = "pgserver"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedPostgres:
    """A Postgres cluster in ``data_dir``; ``start()`` returns the superuser URL."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.pgdata = self.data_dir / "pgdata"
        self.port_file = self.data_dir / "port"
        self.password_file = self.data_dir / "superuser-password"
        self.log_file = self.pgdata / "postgres.log"
        self._requested_port = port
        self._system_user: str | None = _RUN_AS if os.geteuid() == 0 else None

    @property
    def port(self) -> int:
        return int(self.port_file.read_text())

    @property
    def url(self) -> str:
        password = self.password_file.read_text().strip()
        return f"postgresql://postgres:{password}@127.0.0.1:{self.port}/postgres"

    def start(self) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._prepare_permissions()
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb()
        if not self.port_file.exists() or self._requested_port is not None:
            self.port_file.write_text(str(self._requested_port or free_port()))
        if not self._running():
            options = (
                f"-h 127.0.0.1 -p {self.port} -c unix_socket_directories='' -c max_connections=300 "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            )
            pg_ctl(
                ["-w", "-t", "30", "-o", options, "-l", str(self.log_file), "start"],
                pgdata=self.pgdata,
                user=self._system_user,
                timeout=60,
            )
        self._wait_ready()
        return self.url

    def stop(self) -> None:
        if self._running():
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=self._system_user, timeout=60)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def _running(self) -> bool:
        result = subprocess.run(
            [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(self.pgdata), "status"],
            capture_output=True,
            check=False,
            user=self._system_user,
        )
        return result.returncode == 0

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"embedded Postgres did not start; see {self.log_file}")

    def _initdb(self) -> None:
        password = secrets.token_urlsafe(24)
        self.password_file.write_text(password)
        self.password_file.chmod(0o600)
        self.pgdata.mkdir(exist_ok=True)
        if self._system_user:
            shutil.chown(self.pgdata, self._system_user, self._system_user)
        self.pgdata.chmod(0o700)
        with tempfile.NamedTemporaryFile("w", delete=False, dir=self.data_dir, suffix=".pw") as pwfile:
            pwfile.write(password + "\n")
        os.chmod(pwfile.name, 0o644)
        try:
            initdb(
                [
                    "--auth-host=scram-sha-256",
                    "--auth-local=trust",
                    "--encoding=UTF8",
                    "--locale=C",
                    "-U",
                    "postgres",
                    f"--pwfile={pwfile.name}",
                ],
                pgdata=self.pgdata,
                user=self._system_user,
            )
        finally:
            os.unlink(pwfile.name)

    def _prepare_permissions(self) -> None:
        if not self._system_user:
            return
        from pgserver.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

        ensure_user_exists(self._system_user)
        ensure_prefix_permissions(self.data_dir)
        self.data_dir.chmod(0o755)
        ensure_prefix_permissions(POSTGRES_BIN_PATH)
        read, execute = 0o044, 0o011
        ensure_folder_permissions(POSTGRES_BIN_PATH, read | execute)
        ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", read)
