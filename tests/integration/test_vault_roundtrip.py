"""The vault on the real PostgreSQL, in both key modes (local master key; KMS via moto)."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from blockbuster import blockbuster_ctx
from moto import mock_aws

from service.errors import CryptoError, UnknownEntityError, ValidationError
from service.vault import KmsKeyProvider, LocalKeyProvider, Vault

REGION = "eu-west-1"


def _rfc3339(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).isoformat().replace("+00:00", "Z")


def oauth_secret(provider: str, *, expires_in: timedelta = timedelta(hours=1), refresh: bool = True) -> str:
    """A realistic OAuth token set for a provider (CONTRACT section 1)."""
    body: dict[str, Any] = {
        "access_token": f"{provider}-access-{os.urandom(6).hex()}",
        "refresh_token": f"{provider}-refresh-{os.urandom(6).hex()}" if refresh else None,
        "expires_at": _rfc3339(expires_in) if refresh else None,
    }
    body.update({"quickbooks": {"realm_id": "9130350000000001"}, "square": {"merchant_id": "MLQ1SQUARE"},
                 "mailchimp": {"server_prefix": "us6"}, "stripe": {}}[provider])
    return json.dumps(body)


# (provider, kind, secret): every kind, and every provider that uses it.
CASES = [
    ("stripe", "api_key", "sk_test_" + "a1B2c3D4e5F6g7H8i9J0k1L2"),
    ("square", "api_key", "EAAAEsandboxAccessToken0123456789"),
    ("mailchimp", "api_key", "0123456789abcdef0123456789abcdef-us6"),
    ("quickbooks", "oauth", oauth_secret("quickbooks")),
    ("square", "oauth", oauth_secret("square")),
    ("mailchimp", "oauth", oauth_secret("mailchimp", refresh=False)),
    ("stripe", "webhook_secret", "whsec_" + "Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2"),
    ("mailchimp", "webhook_secret", "mc-url-token-" + "Qw3rTy8uIoP"),
]


@pytest.fixture
def kms_key() -> Iterator[str]:
    """An in-process moto KMS with one symmetric key; yields its id."""
    with mock_aws():
        client = boto3.client("kms", region_name=REGION)
        yield client.create_key(Description="integration-service test")["KeyMetadata"]["KeyId"]


@pytest.fixture(params=["local", "kms"])
async def vault(request: pytest.FixtureRequest, pool: Any) -> AsyncIterator[Vault]:
    """A vault in each key mode on this run's database."""
    if request.param == "local":
        yield Vault(pool, LocalKeyProvider(os.urandom(32)))
        return
    key_id = request.getfixturevalue("kms_key")
    yield Vault(pool, KmsKeyProvider(key_id=key_id, region=REGION, endpoint=None))


async def _row(pool: Any, venue_id: str, provider: str, kind: str) -> Any:
    return await pool.fetchrow(
        "SELECT * FROM credentials WHERE venue_id = $1 AND provider = $2 AND kind = $3",
        venue_id, provider, kind)


@pytest.mark.parametrize(("provider", "kind", "secret"), CASES, ids=[f"{p}-{k}" for p, k, _ in CASES])
async def test_round_trip_every_kind(
    vault: Vault, pool: Any, venue_id: str, provider: str, kind: str, secret: str
) -> None:
    """What is stored comes back exactly, and the row holds no plaintext."""
    info = await vault.set(venue_id, provider, kind, secret)
    got = await vault.get(venue_id, provider, kind)
    row = await _row(pool, venue_id, provider, kind)
    stored = b"".join(bytes(row[c]) for c in ("wrapped_data_key", "nonce", "ciphertext"))
    assert (secret, 1, "unverified", info.key_source, False) == (
        got.secret, got.info.version, got.info.status, row["key_source"], secret.encode() in stored)
    assert secret not in repr(got) + repr(got.info)


async def test_oauth_metadata_is_kept_in_clear(vault: Vault, venue_id: str) -> None:
    """Realm, merchant and server prefix are stored beside the ciphertext for lookups."""
    qb = await vault.set(venue_id, "quickbooks", "oauth", oauth_secret("quickbooks"))
    sq = await vault.set(venue_id, "square", "oauth", oauth_secret("square"))
    mc = await vault.set(venue_id, "mailchimp", "api_key", "0123456789abcdef0123456789abcdef-us21")
    assert ("9130350000000001", "MLQ1SQUARE", "us21") == (qb.realm_id, sq.merchant_id, mc.server_prefix)
    shown = qb.as_json()
    assert {"venue_id", "provider", "kind", "version", "status", "created_at", "rotated_at",
            "last_used_at", "expires_at", "realm_id"} <= set(shown)


async def test_moto_enforces_the_kms_encryption_context(kms_key: str) -> None:
    """Finding: moto's KMS Decrypt refuses a different EncryptionContext, like real KMS."""
    client = boto3.client("kms", region_name=REGION)
    blob = client.generate_data_key(KeyId=kms_key, KeySpec="AES_256",
                                    EncryptionContext={"venue_id": "a"})["CiphertextBlob"]
    with pytest.raises(client.exceptions.InvalidCiphertextException):
        client.decrypt(CiphertextBlob=blob, EncryptionContext={"venue_id": "b"})


async def test_wrong_encryption_context_fails_clearly(vault: Vault, pool: Any, venue_id: str) -> None:
    """A row's sealed secret copied onto another venue's row does not decrypt there."""
    other = f"{venue_id}-other"
    await vault.set(venue_id, "stripe", "api_key", "sk_live_" + "victimVictimVictim01")
    await vault.set(other, "stripe", "api_key", "sk_live_" + "attackerAttacker0002")
    await pool.execute(
        """UPDATE credentials AS t SET wrapped_data_key = s.wrapped_data_key, nonce = s.nonce,
               ciphertext = s.ciphertext
           FROM credentials AS s WHERE s.venue_id = $1 AND t.venue_id = $2
             AND s.provider = t.provider AND s.kind = t.kind""",
        venue_id, other)
    with pytest.raises(CryptoError, match="wrong .*encryption context"):
        await vault.get(other, "stripe", "api_key")


class ContextBlindKeys:
    """A key provider that unwraps with the context it wrapped under, whatever it is asked:
    stands in for a KMS that did not enforce the encryption context."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.source, self.key_id = inner.source, inner.key_id
        self._contexts: dict[bytes, dict[str, str]] = {}

    async def generate_data_key(self, context: dict[str, str]) -> tuple[bytes, bytes]:
        plain, wrapped = await self.inner.generate_data_key(context)
        self._contexts[wrapped] = context
        return plain, wrapped

    async def decrypt_data_key(self, wrapped: bytes, context: dict[str, str], *,
                               key_id: str | None = None) -> bytes:
        return await self.inner.decrypt_data_key(wrapped, self._contexts[wrapped], key_id=key_id)


async def test_aad_binding_catches_a_context_swap_on_its_own(
    vault: Vault, pool: Any, venue_id: str
) -> None:
    """Even if the key service ignored the context, AES-GCM's associated data refuses the swap."""
    blind = Vault(pool, ContextBlindKeys(vault._keys))
    await blind.set(venue_id, "mailchimp", "webhook_secret", "token-of-venue-a")
    await pool.execute("UPDATE credentials SET venue_id = $2 WHERE venue_id = $1", venue_id, f"{venue_id}-b")
    with pytest.raises(CryptoError, match="wrong encryption context or tampered ciphertext"):
        await blind.get(f"{venue_id}-b", "mailchimp", "webhook_secret")


@pytest.mark.parametrize("column", ["ciphertext", "nonce", "wrapped_data_key"])
@pytest.mark.parametrize("position", [0, -1])
async def test_a_flipped_byte_fails_clearly(
    vault: Vault, pool: Any, venue_id: str, column: str, position: int
) -> None:
    """Flipping any stored byte (first or last) gives CryptoError, never garbage."""
    await vault.set(venue_id, "stripe", "webhook_secret", "whsec_" + "tamperTamperTamper01")
    value = bytearray((await _row(pool, venue_id, "stripe", "webhook_secret"))[column])
    value[position] ^= 0x01
    await pool.execute(f"UPDATE credentials SET {column} = $2 WHERE venue_id = $1", venue_id, bytes(value))
    with pytest.raises(CryptoError):
        await vault.get(venue_id, "stripe", "webhook_secret")


async def test_wrong_master_key_fails_clearly(pool: Any, venue_id: str) -> None:
    """A different LOCAL_MASTER_KEY cannot read what another one stored."""
    stored_by = Vault(pool, LocalKeyProvider(os.urandom(32)))
    await stored_by.set(venue_id, "stripe", "api_key", "sk_test_" + "x" * 20)
    with pytest.raises(CryptoError, match="LOCAL_MASTER_KEY"):
        await Vault(pool, LocalKeyProvider(os.urandom(32))).get(venue_id, "stripe", "api_key")


async def test_key_mode_mismatch_fails_clearly(pool: Any, venue_id: str, kms_key: str) -> None:
    """A locally sealed credential read in KMS mode (and the reverse) names the mismatch."""
    local = Vault(pool, LocalKeyProvider(os.urandom(32)))
    kms = Vault(pool, KmsKeyProvider(key_id=kms_key, region=REGION, endpoint=None))
    await local.set(venue_id, "stripe", "api_key", "sk_test_" + "l" * 20)
    await kms.set(venue_id, "square", "api_key", "EAAA" + "k" * 20)
    with pytest.raises(CryptoError, match="KMS_ENABLED mismatch"):
        await kms.get(venue_id, "stripe", "api_key")
    with pytest.raises(CryptoError, match="KMS_ENABLED mismatch"):
        await local.get(venue_id, "square", "api_key")


async def test_rotation_gives_new_version_and_data_key_and_drops_old_ciphertext(
    vault: Vault, pool: Any, venue_id: str
) -> None:
    """rotate: version + 1, a new wrapped data key, and the old ciphertext is nowhere in the table."""
    secret = oauth_secret("quickbooks")
    await vault.set(venue_id, "quickbooks", "oauth", secret)
    before = await _row(pool, venue_id, "quickbooks", "oauth")
    info = await vault.rotate(venue_id, "quickbooks", "oauth")
    after = await _row(pool, venue_id, "quickbooks", "oauth")
    leftovers = await pool.fetchval(
        "SELECT count(*) FROM credentials WHERE ciphertext = $1 OR wrapped_data_key = $2 "
        "OR position($1 in ciphertext) > 0", before["ciphertext"], before["wrapped_data_key"])
    assert (2, 2, True, True, 0, secret) == (
        info.version, after["version"], before["wrapped_data_key"] != after["wrapped_data_key"],
        before["ciphertext"] != after["ciphertext"], leftovers,
        (await vault.get(venue_id, "quickbooks", "oauth")).secret)
    assert info.rotated_at is not None and info.created_at == before["created_at"]


async def test_set_again_replaces_the_secret_and_bumps_the_version(vault: Vault, venue_id: str) -> None:
    """A second set replaces the secret, bumps the version and resets the status."""
    first = await vault.set(venue_id, "stripe", "api_key", "sk_test_" + "1" * 24)
    await vault.record_use(first, ok=True)
    second = await vault.set(venue_id, "stripe", "api_key", "sk_test_" + "2" * 24)
    got = await vault.get(venue_id, "stripe", "api_key")
    assert (2, "unverified", "sk_test_" + "2" * 24) == (second.version, second.status, got.secret)


@pytest.mark.parametrize(("expires_in", "expected"), [
    (timedelta(hours=-1), "stale"),
    (timedelta(minutes=4, seconds=50), "stale"),
    (timedelta(minutes=6), "unverified"),
])
async def test_oauth_near_expiry_is_stale(
    vault: Vault, venue_id: str, expires_in: timedelta, expected: str
) -> None:
    """An OAuth token expired or within 5 minutes of expiry shows as stale."""
    await vault.set(venue_id, "square", "oauth", oauth_secret("square", expires_in=expires_in))
    assert expected == (await vault.show(venue_id, "square"))[0].status


async def test_use_is_recorded(vault: Vault, venue_id: str) -> None:
    """record_use counts uses, stamps last_used_at, marks valid, then invalid on an auth error."""
    info = await vault.set(venue_id, "stripe", "api_key", "sk_test_" + "u" * 24)
    await vault.record_use(info, ok=True)
    await vault.record_use(info, ok=True)
    valid = (await vault.show(venue_id))[0]
    await vault.record_use(info, ok=False, error="authentication: key revoked")
    invalid = (await vault.show(venue_id))[0]
    assert (2, "valid", True, 3, "invalid", "authentication: key revoked") == (
        valid.use_count, valid.status, valid.last_used_at is not None, invalid.use_count,
        invalid.status, invalid.last_error)


async def test_oauth_wins_over_api_key(vault: Vault, venue_id: str) -> None:
    """find_auth prefers oauth where a provider has both."""
    await vault.set(venue_id, "square", "api_key", "EAAA" + "a" * 24)
    assert "api_key" == (await vault.find_auth(venue_id, "square")).info.kind
    await vault.set(venue_id, "square", "oauth", oauth_secret("square"))
    assert "oauth" == (await vault.find_auth(venue_id, "square")).info.kind


async def test_delete_removes_rows_for_good(vault: Vault, pool: Any, venue_id: str) -> None:
    """delete with a kind removes that row; without, every kind; nothing left → UnknownEntityError."""
    await vault.set(venue_id, "stripe", "api_key", "sk_test_" + "d" * 24)
    await vault.set(venue_id, "stripe", "webhook_secret", "whsec_" + "d" * 24)
    await vault.set(venue_id, "mailchimp", "api_key", "0123456789abcdef0123456789abcdef-us1")
    assert 1 == await vault.delete(venue_id, "stripe", "webhook_secret")
    assert 1 == await vault.delete(venue_id, "stripe")
    remaining = await pool.fetchval("SELECT count(*) FROM credentials WHERE venue_id = $1", venue_id)
    assert 1 == remaining
    with pytest.raises(UnknownEntityError):
        await vault.delete(venue_id, "stripe")
    with pytest.raises(UnknownEntityError):
        await vault.get(venue_id, "stripe", "api_key")


@pytest.mark.parametrize(("provider", "kind", "secret", "message"), [
    ("stripe", "oauth", "{}", "not used with stripe"),
    ("paypal", "api_key", "x", "unknown provider"),
    ("stripe", "webhook_secret", "not-whsec", "whsec_"),
    ("mailchimp", "api_key", "no-dash-", "<key>-<dc>"),
    ("quickbooks", "oauth", "not json", "must be JSON"),
    ("quickbooks", "oauth", '{"access_token": "a", "refresh_token": "r", "expires_at": null}', "realm_id"),
    ("square", "oauth", '{"access_token": "a", "refresh_token": "r", "expires_at": "tomorrow"}', "RFC 3339"),
    ("square", "oauth", '{"access_token": "a"}', "refresh_token is required"),
    ("stripe", "api_key", " sk_test_padded ", "one line"),
])
async def test_malformed_secrets_are_refused_before_encryption(
    pool: Any, venue_id: str, provider: str, kind: str, secret: str, message: str
) -> None:
    """A secret of the wrong shape is refused with ValidationError and nothing is stored."""
    vault = Vault(pool, LocalKeyProvider(os.urandom(32)))  # checks run before any key is made
    with pytest.raises(ValidationError, match=message):
        await vault.set(venue_id, provider, kind, secret)
    assert 0 == await pool.fetchval("SELECT count(*) FROM credentials WHERE venue_id = $1", venue_id)


@pytest.fixture(scope="module")
def kms_server() -> Iterator[str]:
    """moto as a real HTTP server on 127.0.0.1, so boto3 does real socket I/O."""
    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


async def test_kms_calls_never_block_the_event_loop(
    pool: Any, venue_id: str, kms_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With blockbuster watching the loop, set/get/rotate over real KMS HTTP run clean."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    admin = boto3.client("kms", region_name=REGION, endpoint_url=kms_server)
    key_id = admin.create_key()["KeyMetadata"]["KeyId"]
    admin.close()
    keys = KmsKeyProvider(key_id=key_id, region=REGION, endpoint=kms_server)
    vault = Vault(pool, keys)
    try:
        with blockbuster_ctx():
            await vault.set(venue_id, "stripe", "api_key", "sk_test_" + "b" * 24)
            await vault.rotate(venue_id, "stripe", "api_key")
            got = await vault.get(venue_id, "stripe", "api_key")
    finally:
        await keys.close()
    assert ("sk_test_" + "b" * 24, 2) == (got.secret, got.info.version)


async def test_a_webhooks_account_finds_its_venue(vault: Vault, venue_id: str, pool: Any) -> None:
    """A QuickBooks realm or a Square merchant (what their webhooks name) leads to the venue
    whose OAuth credential holds it; an unknown one, or none, to no venue."""
    from service.database.credentials import venue_for_account

    realm, merchant = f"realm-{os.urandom(6).hex()}", f"MERCHANT{os.urandom(6).hex()}"
    for provider, field, value in (("quickbooks", "realm_id", realm), ("square", "merchant_id", merchant)):
        secret = {**json.loads(oauth_secret(provider)), field: value}
        await vault.set(venue_id, provider, "oauth", json.dumps(secret))
    assert venue_id == await venue_for_account(pool, "quickbooks", realm_id=realm)
    assert venue_id == await venue_for_account(pool, "square", merchant_id=merchant)
    assert None is await venue_for_account(pool, "quickbooks", realm_id=merchant)  # a merchant is not a realm
    assert None is await venue_for_account(pool, "square", merchant_id="MLQ1UNKNOWN")
    assert None is await venue_for_account(pool, "square")
