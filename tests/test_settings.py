"""Settings: embedded defaults work with nothing set; bad values fail loudly."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent


def run_manage(*args, env_overrides: dict, tmp_path: Path):
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CHAMP_PORTAL_", "DATABASE_URL", "CHAMP_API_BASE"))
    }
    env.update({"CHAMP_PORTAL_VAR_DIR": str(tmp_path / "var"), **env_overrides})
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_unset_environment_gives_working_defaults(tmp_path):
    result = run_manage("check", env_overrides={}, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    var = tmp_path / "var"
    for name in ("secret_key", "token_keys"):
        path = var / name
        assert path.exists()
        assert (path.stat().st_mode & 0o777) == 0o600
    Fernet(var.joinpath("token_keys").read_text().strip())  # a valid key


def test_generated_secrets_are_stable_across_restarts(tmp_path):
    run_manage("check", env_overrides={}, tmp_path=tmp_path)
    first = (tmp_path / "var" / "token_keys").read_text()
    run_manage("check", env_overrides={}, tmp_path=tmp_path)
    assert (tmp_path / "var" / "token_keys").read_text() == first


@pytest.mark.parametrize(
    "garbled", ["not-a-key", "", "  ,  ", Fernet.generate_key().decode()[:-4]]
)
def test_malformed_token_keys_fail_check_with_a_clear_message(tmp_path, garbled):
    result = run_manage(
        "check", env_overrides={"CHAMP_PORTAL_TOKEN_KEYS": garbled}, tmp_path=tmp_path
    )
    assert result.returncode != 0
    assert "CHAMP_PORTAL_TOKEN_KEYS" in result.stderr
    if garbled.strip(" ,"):
        assert garbled not in result.stderr  # key material is never echoed


def test_bad_boolean_names_the_variable(tmp_path):
    result = run_manage("check", env_overrides={"CHAMP_PORTAL_DEBUG": "maybe"}, tmp_path=tmp_path)
    assert result.returncode != 0
    assert "CHAMP_PORTAL_DEBUG" in result.stderr


def test_unknown_broker_names_the_variable(tmp_path):
    result = run_manage(
        "check", env_overrides={"CHAMP_PORTAL_BROKER": "amqp://x"}, tmp_path=tmp_path
    )
    assert result.returncode != 0
    assert "CHAMP_PORTAL_BROKER" in result.stderr


def test_redis_broker_url_configures_django_q(tmp_path):
    result = run_manage(
        "shell",
        "-v",
        "0",
        "-c",
        "from django.conf import settings as s; "
        "print(s.Q_CLUSTER.get('redis'), s.Q_CLUSTER.get('orm'))",
        env_overrides={"CHAMP_PORTAL_BROKER": "redis://127.0.0.1:6379/3"},
        tmp_path=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["redis://127.0.0.1:6379/3", "None"]


def test_embedded_default_uses_the_orm_broker_with_safe_retry(tmp_path):
    # In a fresh process with nothing set (this suite may itself run on Redis).
    result = run_manage(
        "shell",
        "-v",
        "0",
        "-c",
        "import json; from django.conf import settings as s; print(json.dumps(s.Q_CLUSTER))",
        env_overrides={},
        tmp_path=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    q = json.loads(result.stdout)
    assert q["orm"] == "default"
    assert "redis" not in q
    assert q["retry"] > q["timeout"]
    assert q["ack_failures"] is True
    assert q["catch_up"] is False


def test_deploy_checks_pass_with_production_settings(tmp_path):
    result = run_manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        env_overrides={
            "CHAMP_PORTAL_SECRET_KEY": "x" * 20
            + "-production-secret-key-with-enough-entropy-1234",
            "CHAMP_PORTAL_ALLOWED_HOSTS": "portal.example.com",
        },
        tmp_path=tmp_path,
    )
    assert result.returncode == 0, result.stderr + result.stdout


def test_deploy_check_warns_about_a_key_file_others_can_read(tmp_path, monkeypatch):
    from runs.checks import check_secret_file_modes

    keys = tmp_path / "token_keys"
    keys.write_text(Fernet.generate_key().decode())
    monkeypatch.delenv("CHAMP_PORTAL_TOKEN_KEYS", raising=False)
    monkeypatch.setenv("CHAMP_PORTAL_TOKEN_KEYS_FILE", str(keys))
    monkeypatch.setenv("CHAMP_PORTAL_SECRET_KEY", "from the environment: no file")

    keys.chmod(0o644)
    (warning,) = check_secret_file_modes()
    assert warning.id == "runs.W001"
    assert "token encryption keys" in warning.msg and "0644" in warning.msg
    assert warning.hint == f"chmod 600 {keys}"

    keys.chmod(0o600)
    assert check_secret_file_modes() == []
