"""A throwaway PostgreSQL 15 server on loopback that tests may stop and start again."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

PG_BIN = Path("/usr/local/bin")


def _as_postgres(args: list[str]) -> list[str]:
    """initdb refuses to run as root: run the PostgreSQL binaries as the postgres user."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *args]
    return args


@dataclass
class Postgres:
    """A throwaway PostgreSQL server that tests may stop and start again."""

    data_dir: Path
    port: int
    log_file: Path

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        subprocess.run(
            _as_postgres(
                [
                    str(PG_BIN / "pg_ctl"),
                    "start",
                    "-w",
                    "-t",
                    "60",
                    "-D",
                    str(self.data_dir),
                    "-l",
                    str(self.log_file),
                    "-o",
                    f"-p {self.port} -h 127.0.0.1 -k {self.data_dir} -c fsync=off",
                ]
            ),
            check=True,
            capture_output=True,
        )

    def stop(self) -> None:
        subprocess.run(
            _as_postgres(
                [str(PG_BIN / "pg_ctl"), "stop", "-m", "fast", "-w", "-D", str(self.data_dir)]
            ),
            check=True,
            capture_output=True,
        )

    def reset(self) -> None:
        """Drop the tables a test created."""
        engine = sa.create_engine(self.url)
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE IF EXISTS prediction_log, feedback"))
        engine.dispose()


def start_postgres(port: int) -> Postgres:
    """initdb a fresh cluster in a temporary folder owned by postgres and start it."""
    root = Path(tempfile.mkdtemp(prefix="fraud-pg-"))
    data = root / "data"
    data.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        shutil.chown(data, "postgres", "postgres")
    subprocess.run(
        _as_postgres(
            [str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8"]
        ),
        check=True,
        capture_output=True,
    )
    server = Postgres(data, port, root / "postgres.log")
    server.start()
    deadline = time.time() + 30
    while True:
        try:
            sa.create_engine(server.url).connect().close()
            return server
        except sa.exc.OperationalError:
            if time.time() > deadline:
                raise RuntimeError(server.log_file.read_text()[-2000:]) from None
            time.sleep(0.2)


def remove_postgres(server: Postgres) -> None:
    """Stop the server at once and delete its cluster."""
    subprocess.run(
        _as_postgres(
            [str(PG_BIN / "pg_ctl"), "stop", "-m", "immediate", "-D", str(server.data_dir)]
        ),
        capture_output=True,
    )
    shutil.rmtree(server.data_dir.parent, ignore_errors=True)
