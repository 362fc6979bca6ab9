"""Settings: an embedded default that needs no server; placeholder secrets refused (fail closed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from broker.errors import ConfigurationError
from broker.settings import Mode, Settings
from tests.broker.fakes import settings_for


def test_default_is_embedded_sqlite_under_var(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BROKER_DATA_DIR", "BROKER_DATABASE_URL", "BROKER_MODE"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.mode is Mode.production
    assert settings.data_dir == Path("var")
    assert settings.db_url() == f"sqlite:///{Path('var/broker.db').resolve()}"


def test_settings_come_from_broker_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BROKER_DATA_DIR", "/srv/broker")
    monkeypatch.setenv("BROKER_DATABASE_URL", "postgresql+psycopg://app:s3cr3t-value@db/broker")
    settings = Settings()
    assert settings.keys_dir == Path("/srv/broker/keys")
    assert isinstance(settings.database_url, SecretStr)
    assert "s3cr3t" not in repr(settings)


@pytest.mark.parametrize("password", ["changethis", "secret", "password"])
def test_placeholder_database_password_is_refused_in_production(
    tmp_path: Path, password: str
) -> None:
    url = SecretStr(f"postgresql+psycopg://app:{password}@db/broker")
    with pytest.raises(ConfigurationError, match="placeholder password"):
        settings_for(tmp_path, database_url=url).db_url()
    assert settings_for(tmp_path, Mode.development, database_url=url).db_url()


def test_unknown_setting_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="extra"):
        Settings(data_dri="typo")  # type: ignore[call-arg]
