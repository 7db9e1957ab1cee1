"""Helpers to start real `manage.py qcluster` processes on the test database."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


def test_database_url() -> str:
    """A DATABASE_URL for the database this test process is using."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    user = db.get("USER") or ""
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    at = "@" if user else ""
    return (
        f"postgres://{user}{password}{at}{db.get('HOST') or '127.0.0.1'}:"
        f"{db.get('PORT') or 5432}/{db['NAME']}"
    )


def cluster_env(**overrides) -> dict:
    env = dict(os.environ)
    env.update(
        {
            "DATABASE_URL": test_database_url(),
            "CHAMP_PORTAL_SECRET_KEY": settings.SECRET_KEY,
            "CHAMP_PORTAL_TOKEN_KEYS": settings.CHAMP_PORTAL_TOKEN_KEYS,
            "CHAMP_PORTAL_BROKER": settings.CHAMP_PORTAL_BROKER,
            "CHAMP_PORTAL_CLUSTER_NAME": settings.Q_CLUSTER["name"],
            "CHAMP_POLL_INTERVAL_SECONDS": "0.2",
            "CHAMP_POLL_SWEEP_SECONDS": "20",
            "CHAMP_POLL_LEASE_SECONDS": "3",
            "CHAMP_POLL_HEARTBEAT_STALE_SECONDS": "3",
            "CHAMP_POLL_MAX_SWEEPS": str(settings.CHAMP_POLL_MAX_SWEEPS),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update({key: str(value) for key, value in overrides.items()})
    return env


class Cluster:
    """A `manage.py qcluster` subprocess in its own process group."""

    def __init__(self, log_path: Path, **env_overrides):
        self.log_path = log_path
        self.log = open(log_path, "ab")  # noqa: SIM115 (closed in stop())
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"],
            cwd=ROOT,
            env=cluster_env(**env_overrides),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self) -> None:
        """SIGKILL the whole cluster (sentinel and workers): a crash."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self.log.close()

    def stop(self) -> None:
        """Stop gracefully, or kill after a grace period."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(15)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        self.kill()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


def wait_until(condition, *, timeout: float, interval: float = 0.2, message: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s: {message}")
