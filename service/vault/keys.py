"""Key providers: where data keys come from and how they are wrapped.

``KmsKeyProvider`` asks AWS KMS (``GenerateDataKey`` / ``Decrypt`` with an encryption
context; boto3 runs in a worker thread so the event loop never blocks).
``LocalKeyProvider`` wraps data keys with AES-256-GCM under a 32-byte master key held on
this machine (``KMS_ENABLED=false``, development only). Both bind the encryption context:
a wrong one fails with CryptoError.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
from pathlib import Path
from typing import Any, Protocol

import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from service.config import Settings, decode_master_key
from service.errors import ConfigurationError, CryptoError, NetworkError

log = structlog.get_logger(__name__)

LOCAL_PREFIX = b"L1"  # marks a data key wrapped by the local master key
KMS_TIMEOUT_S = 30.0
# Decrypt failures that mean "wrong key, wrong context or tampered blob", not an outage.
_KMS_REFUSALS = ("InvalidCiphertextException", "IncorrectKeyException", "AccessDeniedException",
                 "NotFoundException")


def aad(context: dict[str, str]) -> bytes:
    """The canonical bytes of an encryption context, used as AES-GCM associated data."""
    return json.dumps(context, sort_keys=True, separators=(",", ":")).encode()


class KeyProvider(Protocol):
    """Makes and unwraps data keys under an encryption context."""

    source: str
    key_id: str | None

    async def generate_data_key(self, context: dict[str, str]) -> tuple[bytes, bytes]:
        """Return (plaintext data key, wrapped data key)."""
        ...

    async def decrypt_data_key(
        self, wrapped: bytes, context: dict[str, str], *, key_id: str | None = None
    ) -> bytes:
        """Unwrap a data key; raise CryptoError on a wrong key, context or tampered blob."""
        ...


class LocalKeyProvider:
    """Wraps data keys with a 32-byte master key held by this machine (development)."""

    source: str = "local"
    key_id: str | None = None

    def __init__(self, master_key: bytes) -> None:
        if len(master_key) != 32:
            raise ConfigurationError("the local master key must be 32 bytes")
        self._aead = AESGCM(master_key)

    async def generate_data_key(self, context: dict[str, str]) -> tuple[bytes, bytes]:
        data_key = AESGCM.generate_key(bit_length=256)
        nonce = os.urandom(12)
        return data_key, LOCAL_PREFIX + nonce + self._aead.encrypt(nonce, data_key, aad(context))

    async def decrypt_data_key(
        self, wrapped: bytes, context: dict[str, str], *, key_id: str | None = None
    ) -> bytes:
        if not wrapped.startswith(LOCAL_PREFIX) or len(wrapped) < 2 + 12 + 16:
            raise CryptoError("data key was not wrapped by the local master key (KMS_ENABLED mismatch?)")
        nonce, body = wrapped[2:14], wrapped[14:]
        try:
            return self._aead.decrypt(nonce, body, aad(context))
        except InvalidTag:
            raise CryptoError(
                "data key failed to unwrap: wrong LOCAL_MASTER_KEY, encryption context or tampered data"
            ) from None


class KmsKeyProvider:
    """AWS KMS GenerateDataKey / Decrypt with an encryption context (boto3 in a thread)."""

    source: str = "kms"

    def __init__(self, *, key_id: str, region: str | None, endpoint: str | None) -> None:
        self.key_id: str | None = key_id
        self._region = region
        self._endpoint = endpoint
        self._client: Any = None
        self._lock = asyncio.Lock()

    def _make_client(self) -> Any:
        import boto3  # imported lazily: it takes ~0.3 s and only KMS mode needs it
        from botocore.config import Config

        config = Config(connect_timeout=5, read_timeout=15, retries={"max_attempts": 3, "mode": "standard"})
        return boto3.client("kms", region_name=self._region, endpoint_url=self._endpoint, config=config)

    async def _kms(self) -> Any:
        from botocore.exceptions import BotoCoreError

        async with self._lock:
            if self._client is None:
                try:
                    self._client = await asyncio.to_thread(self._make_client)
                except BotoCoreError as exc:  # NoRegionError and friends
                    raise ConfigurationError(f"KMS client: {exc} (set AWS_REGION)") from exc
        return self._client

    async def _call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        client = await self._kms()
        try:
            async with asyncio.timeout(KMS_TIMEOUT_S):
                result: dict[str, Any] = await asyncio.to_thread(getattr(client, operation), **kwargs)
            return result
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "ClientError")
            if operation == "decrypt" and code in _KMS_REFUSALS:
                raise CryptoError(
                    f"KMS refused to decrypt ({code}): wrong key, encryption context or tampered data"
                ) from None
            if code in ("ThrottlingException", "KMSInternalException", "DependencyTimeoutException"):
                raise NetworkError(f"KMS {operation} failed: {code}") from exc
            raise ConfigurationError(f"KMS {operation} failed: {code}") from exc
        except NoCredentialsError as exc:
            raise ConfigurationError(f"KMS {operation}: no AWS credentials found") from exc
        except (BotoCoreError, TimeoutError) as exc:
            raise NetworkError(f"KMS {operation} failed: {exc.__class__.__name__}") from exc

    async def close(self) -> None:
        """Close the boto3 client's connections (idempotent)."""
        client, self._client = self._client, None
        if client is not None:
            await asyncio.to_thread(client.close)

    async def generate_data_key(self, context: dict[str, str]) -> tuple[bytes, bytes]:
        reply = await self._call(
            "generate_data_key", KeyId=self.key_id, KeySpec="AES_256", EncryptionContext=context
        )
        return reply["Plaintext"], reply["CiphertextBlob"]

    async def decrypt_data_key(
        self, wrapped: bytes, context: dict[str, str], *, key_id: str | None = None
    ) -> bytes:
        if wrapped.startswith(LOCAL_PREFIX):
            raise CryptoError("data key was wrapped locally, not by KMS (KMS_ENABLED mismatch?)")
        # The key that wrapped this blob (stored with the row), so a KMS_KEY_ID change
        # does not orphan older credentials.
        reply = await self._call(
            "decrypt", CiphertextBlob=wrapped, EncryptionContext=context, KeyId=key_id or self.key_id
        )
        plaintext: bytes = reply["Plaintext"]
        return plaintext


def load_master_key(settings: Settings) -> bytes:
    """LOCAL_MASTER_KEY, else the key file, generated once (0600) with a warning."""
    if settings.local_master_key is not None:
        return decode_master_key(settings.local_master_key.get_secret_value())
    path = settings.master_key_path()
    try:
        return _read_key_file(path)
    except FileNotFoundError:
        pass
    try:
        created = _create_key_file(path)
    except OSError as exc:
        raise ConfigurationError(f"LOCAL_MASTER_KEY_FILE {path}: cannot create: {exc.strerror}") from None
    if created:
        log.warning("local_master_key_generated", path=str(path),
                    hint=f"generated a new local master key at {path}; back it up: "
                         "credentials stored under it cannot be read without it")
    return _read_key_file(path)


def _create_key_file(path: Path) -> bool:
    """Write a new key beside ``path`` and hard-link it into place: readers never see a
    half-written file, and when processes race (daemon and ingress starting together) one
    key wins and every process reads that one. False when another process won."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.link(draft, path)
        return True
    except FileExistsError:
        return False
    finally:
        draft.unlink(missing_ok=True)


def _read_key_file(path: Path) -> bytes:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise ConfigurationError(f"LOCAL_MASTER_KEY_FILE {path}: cannot read: {exc.strerror}") from None
    try:
        return decode_master_key(text)
    except ValueError as exc:
        raise ConfigurationError(f"LOCAL_MASTER_KEY_FILE {path}: {exc}") from None


def key_provider_from_settings(settings: Settings) -> KeyProvider:
    """KMS when KMS_ENABLED, else the local master key."""
    if settings.kms_enabled:
        if not settings.kms_key_id:
            raise ConfigurationError("KMS_KEY_ID is required when KMS_ENABLED=true")
        return KmsKeyProvider(
            key_id=settings.kms_key_id, region=settings.aws_region, endpoint=settings.kms_endpoint
        )
    return LocalKeyProvider(load_master_key(settings))
