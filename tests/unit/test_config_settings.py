"""Settings: every name of CONTRACT section 2, its default, and one-line refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.config import ConfigurationError, Settings, load_settings

# CONTRACT section 2: every name, with the default the contract gives (None: no default).
CONTRACT_DEFAULTS: dict[str, object] = {
    "AMQP_URL": "amqp://guest:guest@127.0.0.1:5672/",
    "DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/integration",
    "HTTP_HOST": "127.0.0.1",
    "DAEMON_PORT": 8081,
    "INGRESS_PORT": 8080,
    "SANDBOX_PORT": 8090,
    "INGRESS_PUBLIC_URL": "http://127.0.0.1:8080",
    "LOG_LEVEL": "INFO",
    "LOG_FORMAT": "json",  # stderr is not a terminal under pytest
    "ENVIRONMENT": "development",
    "KMS_ENABLED": False,
    "KMS_KEY_ID": None,
    "KMS_ENDPOINT": None,
    "AWS_REGION": None,
    "LOCAL_MASTER_KEY": None,
    "LOCAL_MASTER_KEY_FILE": Path("~/.config/integration-service/master.key"),
    "STRIPE_API_BASE": "https://api.stripe.com",
    "SQUARE_API_BASE": None,
    "SQUARE_OAUTH_URL": None,
    "SQUARE_ENVIRONMENT": "production",
    "SQUARE_CLIENT_ID": None,
    "SQUARE_CLIENT_SECRET": None,
    "SQUARE_WEBHOOK_SIGNATURE_KEY": None,
    "QUICKBOOKS_API_BASE": None,
    "QUICKBOOKS_OAUTH_URL": "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer",
    "QUICKBOOKS_SANDBOX": False,
    "QUICKBOOKS_CLIENT_ID": None,
    "QUICKBOOKS_CLIENT_SECRET": None,
    "QUICKBOOKS_WEBHOOK_VERIFIER_TOKEN": None,
    "MAILCHIMP_API_BASE": "https://{dc}.api.mailchimp.com",
    "MAILCHIMP_OAUTH_URL": "https://login.mailchimp.com/oauth2/token",
    "MAILCHIMP_METADATA_URL": "https://login.mailchimp.com/oauth2/metadata",
    "MAILCHIMP_CLIENT_ID": None,
    "MAILCHIMP_CLIENT_SECRET": None,
    "RETRY_MAX_ATTEMPTS": 8,
    "RETRY_BASE_DELAY_SECONDS": 1.0,
    "RETRY_MAX_DELAY_SECONDS": 300.0,
    "SHUTDOWN_GRACE_SECONDS": 30.0,
    "HEALTH_CHECK_INTERVAL_SECONDS": 300.0,
    "SANDBOX_TOKEN_TTL_SECONDS": None,
    **{f"RATE_LIMIT_{p}_{what}": None for p in ("STRIPE", "SQUARE", "QUICKBOOKS", "MAILCHIMP")
       for what in ("PER_SECOND", "CONCURRENCY")},
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Settings see only what each test sets: no inherited variables, no stray .env."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def _plain(value: object) -> object:
    get = getattr(value, "get_secret_value", None)
    return get() if get else value


def test_every_contract_name_exists_with_its_default() -> None:
    """Each CONTRACT section 2 variable is a setting and defaults as the contract says."""
    settings = load_settings()
    actual = {name: _plain(getattr(settings, name.lower())) for name in CONTRACT_DEFAULTS}
    assert CONTRACT_DEFAULTS == actual


def test_derived_provider_bases_follow_the_contract() -> None:
    """Square defaults to connect.squareup.com, QuickBooks to production; explicit bases win."""
    settings = load_settings()
    assert ("https://connect.squareup.com", "https://quickbooks.api.intuit.com") == (
        settings.square_base, settings.quickbooks_base)
    sandboxed = load_settings(square_environment="sandbox", quickbooks_sandbox=True)
    assert ("https://connect.squareupsandbox.com", "https://sandbox-quickbooks.api.intuit.com") == (
        sandboxed.square_base, sandboxed.quickbooks_base)
    explicit = load_settings(square_environment="sandbox", square_api_base="http://127.0.0.1:8090/square",
                             quickbooks_sandbox=True, quickbooks_api_base="http://127.0.0.1:8090/quickbooks")
    assert ("http://127.0.0.1:8090/square", "http://127.0.0.1:8090/quickbooks") == (
        explicit.square_base, explicit.quickbooks_base)
    assert "https://us6.api.mailchimp.com" == settings.mailchimp_base_for("us6")


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """Values come from the environment, converted to their types."""
    monkeypatch.setenv("DAEMON_PORT", "9001")
    monkeypatch.setenv("KMS_ENABLED", "true")
    monkeypatch.setenv("KMS_KEY_ID", "alias/x")
    monkeypatch.setenv("RATE_LIMIT_SQUARE_PER_SECOND", "4.5")
    monkeypatch.setenv("LOG_LEVEL", "debug")
    settings = load_settings()
    assert (9001, True, "alias/x", (4.5, None), "DEBUG") == (
        settings.daemon_port, settings.kms_enabled, settings.kms_key_id,
        settings.rate_override("square"), settings.log_level)


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    """An optional .env in the working directory supplies values."""
    (tmp_path / ".env").write_text("SANDBOX_PORT=9999\nHTTP_HOST=0.0.0.0\n", encoding="utf-8")
    settings = load_settings()
    assert (9999, "0.0.0.0") == (settings.sandbox_port, settings.http_host)


BAD_VALUES = [
    ("DAEMON_PORT", "abc"),
    ("INGRESS_PORT", "70000"),
    ("SANDBOX_PORT", "0"),
    ("AMQP_URL", "http://guest:hunter2@127.0.0.1/"),
    ("DATABASE_URL", "mysql://root:hunter2@127.0.0.1/x"),
    ("INGRESS_PUBLIC_URL", "http://127.0.0.1:8080/"),
    ("STRIPE_API_BASE", "ftp://api.stripe.com"),
    ("KMS_ENDPOINT", "not a url"),
    ("LOG_LEVEL", "LOUD"),
    ("LOG_FORMAT", "xml"),
    ("ENVIRONMENT", "staging"),
    ("KMS_ENABLED", "perhaps"),
    ("LOCAL_MASTER_KEY", "aHVudGVyMg=="),
    ("LOCAL_MASTER_KEY", "not base64 hunter2!"),
    ("RETRY_MAX_ATTEMPTS", "0"),
    ("RETRY_BASE_DELAY_SECONDS", "-1"),
    ("RATE_LIMIT_QUICKBOOKS_CONCURRENCY", "0"),
    ("QUICKBOOKS_SANDBOX", "sometimes"),
]


@pytest.mark.parametrize(("name", "value"), BAD_VALUES)
def test_bad_value_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    """A bad value gives one line that names the variable and never echoes the value."""
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    message = str(caught.value)
    assert (True, 1, False) == (name in message, len(message.splitlines()), "hunter2" in message)


def test_production_without_kms_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """ENVIRONMENT=production with KMS_ENABLED=false is refused at start."""
    monkeypatch.setenv("ENVIRONMENT", "production")
    with pytest.raises(ConfigurationError, match="KMS_ENABLED=false is refused with ENVIRONMENT=production"):
        load_settings()


def test_production_with_kms_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    """Production with KMS and a key id is a valid configuration."""
    monkeypatch.setenv("ENVIRONMENT", "PRODUCTION")
    monkeypatch.setenv("KMS_ENABLED", "1")
    monkeypatch.setenv("KMS_KEY_ID", "arn:aws:kms:eu-west-1:111122223333:key/abc")
    assert ("production", True) == (load_settings().environment, load_settings().kms_enabled)


def test_kms_without_key_id_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """KMS_ENABLED=true needs KMS_KEY_ID, and the message says so."""
    monkeypatch.setenv("KMS_ENABLED", "true")
    with pytest.raises(ConfigurationError, match="KMS_KEY_ID"):
        load_settings()


def test_secret_settings_do_not_show_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    """Secret settings are SecretStr: printing the settings never shows them."""
    monkeypatch.setenv("SQUARE_CLIENT_SECRET", "sq0csp-hunter2hunter2")
    monkeypatch.setenv("AMQP_URL", "amqp://guest:hunter2@127.0.0.1:5672/")
    settings = load_settings()
    assert (False, "sq0csp-hunter2hunter2") == (
        "hunter2" in repr(settings) + str(settings), _plain(settings.square_client_secret))


def test_job_retention_is_off_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """JOB_RETENTION_DAYS (an addition to the contract's names) keeps jobs forever by default."""
    monkeypatch.delenv("JOB_RETENTION_DAYS", raising=False)
    assert 0 == load_settings().job_retention_days
    monkeypatch.setenv("JOB_RETENTION_DAYS", "30")
    assert 30 == load_settings().job_retention_days
    monkeypatch.setenv("JOB_RETENTION_DAYS", "-1")
    with pytest.raises(ConfigurationError, match="JOB_RETENTION_DAYS"):
        load_settings()


def test_an_api_base_given_with_a_trailing_slash_is_taken_without_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only INGRESS_PUBLIC_URL is specified without a trailing slash; an API base written
    `.../stripe/` is the same base (it was refused at start)."""
    monkeypatch.setenv("STRIPE_API_BASE", "http://127.0.0.1:8090/stripe/")
    monkeypatch.setenv("SQUARE_OAUTH_URL", "http://127.0.0.1:8090/square/oauth2/token/")
    settings = load_settings()
    assert ("http://127.0.0.1:8090/stripe", "http://127.0.0.1:8090/square/oauth2/token") == (
        settings.stripe_api_base, settings.square_oauth_url
    )
