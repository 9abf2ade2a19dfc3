"""Configuration: every environment variable of CONTRACT section 2, in one place.

Settings come from the environment (and an optional ``.env``). Defaults reach the local
RabbitMQ and PostgreSQL so a developer machine needs no configuration. A bad value is
refused at start with a one-line message naming the variable (:func:`load_settings`).
"""

from __future__ import annotations

import base64
import sys
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROVIDERS: tuple[str, ...] = ("stripe", "square", "quickbooks", "mailchimp")

SQUARE_BASES = {
    "production": "https://connect.squareup.com",
    "sandbox": "https://connect.squareupsandbox.com",
}
QUICKBOOKS_BASES = {
    False: "https://quickbooks.api.intuit.com",
    True: "https://sandbox-quickbooks.api.intuit.com",
}


class ConfigurationError(Exception):
    """A setting is missing or malformed; the message names the variable."""


def _default_log_format() -> Literal["console", "json"]:
    return "console" if sys.stderr.isatty() else "json"


class Settings(BaseSettings):
    """The service's settings; field names are the environment names, lower-cased."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    # Services
    amqp_url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/")
    database_url: SecretStr = SecretStr("postgresql://postgres@127.0.0.1:5432/integration")
    http_host: str = "127.0.0.1"
    daemon_port: int = Field(8081, ge=1, le=65535)
    ingress_port: int = Field(8080, ge=1, le=65535)
    sandbox_port: int = Field(8090, ge=1, le=65535)
    ingress_public_url: str = "http://127.0.0.1:8080"

    # Logs
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["console", "json"] = Field(default_factory=_default_log_format)

    # Keys
    environment: Literal["development", "production"] = "development"
    kms_enabled: bool = False
    kms_key_id: str | None = None
    kms_endpoint: str | None = None
    aws_region: str | None = None
    local_master_key: SecretStr | None = None
    local_master_key_file: Path = Path("~/.config/integration-service/master.key")

    # Providers
    stripe_api_base: str = "https://api.stripe.com"
    square_api_base: str | None = None
    square_oauth_url: str | None = None
    square_environment: Literal["production", "sandbox"] = "production"
    square_client_id: str | None = None
    square_client_secret: SecretStr | None = None
    square_webhook_signature_key: SecretStr | None = None
    quickbooks_api_base: str | None = None
    quickbooks_oauth_url: str = "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer"
    quickbooks_sandbox: bool = False
    quickbooks_client_id: str | None = None
    quickbooks_client_secret: SecretStr | None = None
    quickbooks_webhook_verifier_token: SecretStr | None = None
    mailchimp_api_base: str = "https://{dc}.api.mailchimp.com"
    mailchimp_oauth_url: str = "https://login.mailchimp.com/oauth2/token"
    mailchimp_metadata_url: str = "https://login.mailchimp.com/oauth2/metadata"
    mailchimp_client_id: str | None = None
    mailchimp_client_secret: SecretStr | None = None

    # Behaviour
    retry_max_attempts: int = Field(8, ge=1, le=100)
    retry_base_delay_seconds: float = Field(1.0, gt=0)
    retry_max_delay_seconds: float = Field(300.0, gt=0)
    shutdown_grace_seconds: float = Field(30.0, ge=0)
    health_check_interval_seconds: float = Field(300.0, gt=0)
    # Not in CONTRACT section 2 (an addition): finished jobs older than this many days are
    # deleted with their record log by the daemon's housekeeping; 0 keeps them forever.
    job_retention_days: float = Field(0.0, ge=0)
    rate_limit_stripe_per_second: float | None = Field(None, gt=0)
    rate_limit_stripe_concurrency: int | None = Field(None, ge=1)
    rate_limit_square_per_second: float | None = Field(None, gt=0)
    rate_limit_square_concurrency: int | None = Field(None, ge=1)
    rate_limit_quickbooks_per_second: float | None = Field(None, gt=0)
    rate_limit_quickbooks_concurrency: int | None = Field(None, ge=1)
    rate_limit_mailchimp_per_second: float | None = Field(None, gt=0)
    rate_limit_mailchimp_concurrency: int | None = Field(None, ge=1)
    sandbox_token_ttl_seconds: float | None = Field(None, gt=0)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        # `LOG_LEVEL=debug` is what people type; accept it.
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("log_format", "environment", "square_environment", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("amqp_url")
    @classmethod
    def _check_amqp_url(cls, value: SecretStr) -> SecretStr:
        if urlsplit(value.get_secret_value()).scheme not in ("amqp", "amqps"):
            raise ValueError("must be an amqp:// or amqps:// URL")
        return value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: SecretStr) -> SecretStr:
        if urlsplit(value.get_secret_value()).scheme not in ("postgresql", "postgres"):
            raise ValueError("must be a postgresql:// URL")
        return value

    @field_validator(
        "ingress_public_url", "stripe_api_base", "square_api_base", "quickbooks_api_base",
        "mailchimp_api_base", "square_oauth_url", "quickbooks_oauth_url",
        "mailchimp_oauth_url", "mailchimp_metadata_url", "kms_endpoint",
    )
    @classmethod
    def _check_http_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http:// or https:// URL")
        if value.endswith("/"):
            if info.field_name == "ingress_public_url":  # CONTRACT section 2: no trailing slash
                raise ValueError("must not end with a slash")
            value = value.rstrip("/")  # an API base or endpoint: paths are appended to it
        return value

    @field_validator("local_master_key")
    @classmethod
    def _check_master_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            decode_master_key(value.get_secret_value())
        return value

    @model_validator(mode="after")
    def _check_keys(self) -> Settings:
        if self.environment == "production" and not self.kms_enabled:
            raise ValueError("KMS_ENABLED=false is refused with ENVIRONMENT=production")
        if self.kms_enabled and not self.kms_key_id:
            raise ValueError("KMS_KEY_ID is required when KMS_ENABLED=true")
        return self

    # Derived values -----------------------------------------------------------------

    @property
    def square_base(self) -> str:
        """Square's API base: an explicit base wins over SQUARE_ENVIRONMENT."""
        return self.square_api_base or SQUARE_BASES[self.square_environment]

    @property
    def square_token_url(self) -> str:
        return self.square_oauth_url or f"{self.square_base}/oauth2/token"

    @property
    def quickbooks_base(self) -> str:
        """QuickBooks' API base: an explicit base wins over QUICKBOOKS_SANDBOX."""
        return self.quickbooks_api_base or QUICKBOOKS_BASES[self.quickbooks_sandbox]

    def mailchimp_base_for(self, dc: str) -> str:
        return self.mailchimp_api_base.replace("{dc}", dc)

    def rate_override(self, provider: str) -> tuple[float | None, int | None]:
        """(per-second, concurrency) overrides for one provider, None where unset."""
        per_second: float | None = getattr(self, f"rate_limit_{provider}_per_second")
        concurrency: int | None = getattr(self, f"rate_limit_{provider}_concurrency")
        return per_second, concurrency

    def master_key_path(self) -> Path:
        return self.local_master_key_file.expanduser()


def decode_master_key(text: str) -> bytes:
    """Decode a base64 master key; raise ValueError unless it is exactly 32 bytes."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except ValueError as exc:
        raise ValueError("must be base64") from exc
    if len(raw) != 32:
        raise ValueError(f"must decode to 32 bytes, got {len(raw)}")
    return raw


def _describe(error: ValidationError) -> str:
    """One line naming the first bad variable; never its value (it may be a secret)."""
    first = error.errors()[0]
    field = str(first["loc"][0]) if first["loc"] else ""
    message = " ".join(str(first["msg"]).removeprefix("Value error, ").split())
    if not field:
        return f"invalid configuration: {message}"
    return f"invalid configuration: {field.upper()}: {message}"


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment; raise ConfigurationError naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigurationError(_describe(exc)) from None

