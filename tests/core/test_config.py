"""Settings fail fast and name the key; defaults give the embedded mode."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.config import SettingsError, load_settings
from server.core.checkpoints import generate_key_file, public_key_pem


def test_defaults_are_the_embedded_mode(tmp_path: Path) -> None:
    settings = load_settings(environ={"YIHAO_DATA_DIR": str(tmp_path)})
    assert settings.is_sqlite
    assert settings.effective_database_url == f"sqlite+aiosqlite:///{tmp_path / 'yihao.db'}"
    assert settings.effective_auto_migrate is True
    assert settings.redis_url == ""
    # A secret is made once and kept, so tokens survive a restart.
    assert len(settings.secret_key) >= 32
    assert (
        load_settings(environ={"YIHAO_DATA_DIR": str(tmp_path)}).secret_key == settings.secret_key
    )
    # So is the audit checkpoint key, readable by the owner only.
    key = tmp_path / "checkpoint_key"
    assert settings.checkpoint_key_file == key
    assert key.stat().st_mode & 0o777 == 0o600
    assert load_settings(environ={"YIHAO_DATA_DIR": str(tmp_path)}).checkpoint_key_file == key
    assert key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert settings.checkpoint_interval_seconds == 60


def test_the_checkpoint_key_is_required_and_checked_in_the_distributed_mode(
    tmp_path: Path,
) -> None:
    pg = {"YIHAO_DATABASE_URL": "postgresql+asyncpg://db/yihao", "YIHAO_SECRET_KEY": "s" * 40}
    with pytest.raises(SettingsError) as caught:
        load_settings(environ=pg)
    assert "YIHAO_CHECKPOINT_KEY_FILE: required when the database is PostgreSQL" in str(
        caught.value
    )
    missing = tmp_path / "nowhere.pem"
    with pytest.raises(SettingsError) as caught:
        load_settings(environ=pg | {"YIHAO_CHECKPOINT_KEY_FILE": str(missing)})
    assert f"YIHAO_CHECKPOINT_KEY_FILE: cannot read {missing}" in str(caught.value)
    (tmp_path / "garbage.pem").write_text("not a key")
    with pytest.raises(SettingsError) as caught:
        load_settings(environ=pg | {"YIHAO_CHECKPOINT_KEY_FILE": str(tmp_path / "garbage.pem")})
    assert "YIHAO_CHECKPOINT_KEY_FILE:" in str(caught.value) and "not a PEM private key" in str(
        caught.value
    )
    # An auditor verifies with the public key alone; a mismatched pair is refused.
    other = generate_key_file(tmp_path / "other_key")
    (tmp_path / "other.pub").write_text(public_key_pem(other))
    auditor = load_settings(
        environ=pg | {"YIHAO_CHECKPOINT_PUBLIC_KEY_FILE": str(tmp_path / "other.pub")}
    )
    assert auditor.checkpoint_key_file is None
    generate_key_file(tmp_path / "checkpoint_key")
    with pytest.raises(SettingsError) as caught:
        load_settings(
            environ=pg
            | {
                "YIHAO_CHECKPOINT_KEY_FILE": str(tmp_path / "checkpoint_key"),
                "YIHAO_CHECKPOINT_PUBLIC_KEY_FILE": str(tmp_path / "other.pub"),
            }
        )
    assert "YIHAO_CHECKPOINT_PUBLIC_KEY_FILE:" in str(caught.value)
    assert "is not the public half of" in str(caught.value)


def test_distributed_mode_from_environment(tmp_path: Path) -> None:
    generate_key_file(tmp_path / "checkpoint_key")
    settings = load_settings(
        environ={
            "YIHAO_DATABASE_URL": "postgresql+asyncpg://yihao@db/yihao",
            "YIHAO_REDIS_URL": "redis://cache:6379/0",
            "YIHAO_SECRET_KEY": "s" * 40,
            "YIHAO_TOTP_REQUIRED_ROLES": "specialist, platform_admin",
            "YIHAO_CHECKPOINT_KEY_FILE": str(tmp_path / "checkpoint_key"),
        }
    )
    assert not settings.is_sqlite and settings.effective_auto_migrate is False
    assert settings.totp_required_roles == {"specialist", "platform_admin"}


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"YIHAO_PORT": "eighty"}, "YIHAO_PORT"),
        ({"YIHAO_DATABASE_URL": "mysql://x"}, "YIHAO_DATABASE_URL"),
        ({"YIHAO_REDIS_URL": "http://x"}, "YIHAO_REDIS_URL"),
        ({"YIHAO_DATABSE_URL": "sqlite+aiosqlite:///x"}, "YIHAO_DATABSE_URL: unknown setting"),
        ({"YIHAO_TOTP_REQUIRED_ROLES": "surgeon"}, "YIHAO_TOTP_REQUIRED_ROLES"),
        (
            {"YIHAO_DATABASE_URL": "postgresql+asyncpg://db/yihao"},
            "YIHAO_SECRET_KEY: required when the database is PostgreSQL",
        ),
    ],
)
def test_a_wrong_value_names_the_key(environ: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(environ=environ)
    assert named in str(caught.value)


def test_settings_file_with_tables(tmp_path: Path) -> None:
    config = tmp_path / "yihao.toml"
    config.write_text(
        'port = 9000\n[database]\nurl = "sqlite+aiosqlite:///x.db"\npool_size = "many"\n'
    )
    with pytest.raises(SettingsError) as caught:
        load_settings(config, environ={})
    assert f"'database_pool_size' in {config}" in str(caught.value)
    config.write_text(f'port = 9000\ndata_dir = "{tmp_path}"\n')
    settings = load_settings(config, environ={"YIHAO_PORT": "9100"})
    assert settings.port == 9100  # the environment wins over the file


def test_settings_read_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from server.config import Settings

    monkeypatch.setenv("YIHAO_PORT", "9200")
    monkeypatch.setenv("YIHAO_ICE_SERVERS", "stun:stun.example.org:3478, turn:turn.example.org")
    settings = Settings()
    assert settings.port == 9200
    assert settings.ice_servers == ("stun:stun.example.org:3478", "turn:turn.example.org")
    # Overrides are validated like the environment, and leave the original as it was.
    assert settings.with_overrides(port=9300).port == 9300 and settings.port == 9200
    with pytest.raises(ValueError, match="port"):
        settings.with_overrides(port=0)
