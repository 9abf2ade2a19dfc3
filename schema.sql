-- The integration service's schema. Applied by `integration-service migrate` on every
-- start: every statement is idempotent (IF NOT EXISTS, OR REPLACE, guarded DO blocks).
-- One file, one home for SQL structure; queries live in service/database.py.

-- Credentials: envelope-encrypted secrets, one row per (venue, provider, kind).
-- ciphertext = AES-256-GCM(data key, secret, aad = encryption context); the data key is
-- stored only wrapped (by KMS, or by the local master key), never in the clear.
CREATE TABLE IF NOT EXISTS credentials (
    id                  bigserial PRIMARY KEY,
    venue_id            text NOT NULL CHECK (venue_id <> '' AND length(venue_id) <= 200),
    provider            text NOT NULL CHECK (provider IN ('stripe', 'square', 'quickbooks', 'mailchimp')),
    kind                text NOT NULL CHECK (kind IN ('api_key', 'oauth', 'webhook_secret')),
    version             integer NOT NULL DEFAULT 1 CHECK (version >= 1),
    status              text NOT NULL DEFAULT 'unverified'
                        CHECK (status IN ('unverified', 'valid', 'invalid')),
    key_source          text NOT NULL CHECK (key_source IN ('kms', 'local')),
    kms_key_id          text,
    wrapped_data_key    bytea NOT NULL,
    nonce               bytea NOT NULL CHECK (length(nonce) = 12),
    ciphertext          bytea NOT NULL,
    -- Non-secret account identifiers, kept in clear so webhooks and limits can find them.
    account_id          text,           -- the rate-limit account: realm, merchant, or key fingerprint
    realm_id            text,
    merchant_id         text,
    server_prefix       text,
    expires_at          timestamptz,    -- OAuth access token expiry
    last_error          text,
    use_count           bigint NOT NULL DEFAULT 0,
    created_at          timestamptz NOT NULL DEFAULT now(),
    rotated_at          timestamptz,
    last_used_at        timestamptz,
    refreshed_at        timestamptz,
    UNIQUE (venue_id, provider, kind)
);
CREATE INDEX IF NOT EXISTS credentials_realm_idx ON credentials (realm_id) WHERE realm_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS credentials_merchant_idx ON credentials (merchant_id) WHERE merchant_id IS NOT NULL;

-- Sync jobs: one row per job_id (the idempotency key of a sync request).
CREATE TABLE IF NOT EXISTS sync_jobs (
    job_id          text PRIMARY KEY CHECK (job_id <> '' AND length(job_id) <= 200),
    venue_id        text NOT NULL,
    provider        text NOT NULL,
    entity          text NOT NULL,
    direction       text NOT NULL CHECK (direction IN ('pull', 'push')),
    mode            text NOT NULL DEFAULT 'incremental' CHECK (mode IN ('full', 'incremental')),
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'running', 'succeeded', 'partial', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    options         jsonb NOT NULL DEFAULT '{}'::jsonb,
    counts          jsonb NOT NULL DEFAULT '{"processed":0,"created":0,"updated":0,"skipped":0,"failed":0}'::jsonb,
    errors          jsonb NOT NULL DEFAULT '[]'::jsonb,
    message_id      text,
    reply_to        text,
    correlation_id  text,
    result          jsonb,           -- the published job result, replayed to reply_to on a repeat
    progress        jsonb,           -- the pull page in flight, so a crash re-reads at most one page
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS sync_jobs_venue_idx ON sync_jobs (venue_id, created_at DESC);
CREATE INDEX IF NOT EXISTS sync_jobs_status_idx ON sync_jobs (status, created_at DESC);

-- One row per record a job touched; the unique key makes a redelivered push skip
-- records whose outcome is already stored.
CREATE TABLE IF NOT EXISTS sync_record_log (
    id               bigserial PRIMARY KEY,
    job_id           text NOT NULL REFERENCES sync_jobs (job_id) ON DELETE CASCADE,
    record_id        text NOT NULL,
    operation        text NOT NULL,
    outcome          text NOT NULL CHECK (outcome IN ('created', 'updated', 'skipped', 'failed')),
    external_id      text,
    idempotency_key  uuid,
    category         text,
    severity         text,
    message          text,
    at               timestamptz NOT NULL DEFAULT now(),
    UNIQUE (job_id, record_id, operation)
);

-- Incremental pull cursors, stored after each page.
CREATE TABLE IF NOT EXISTS pull_cursors (
    venue_id    text NOT NULL,
    provider    text NOT NULL,
    entity      text NOT NULL,
    cursor      jsonb NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (venue_id, provider, entity)
);

-- What the service last saw of each provider record: links platform ids to provider ids,
-- lets a pull emit events only for changed records, and lets an out-of-order webhook be
-- recognised as older than what is known.
CREATE TABLE IF NOT EXISTS record_state (
    venue_id      text NOT NULL,
    provider      text NOT NULL,
    entity        text NOT NULL,
    external_id   text NOT NULL,
    platform_id   text,
    version       text,             -- the provider's version or updated time, as text
    updated_at    timestamptz,      -- the provider's updated time, when it has one
    content_hash  text NOT NULL,
    deleted       boolean NOT NULL DEFAULT false,
    seen_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (venue_id, provider, entity, external_id)
);
CREATE INDEX IF NOT EXISTS record_state_platform_idx
    ON record_state (venue_id, provider, entity, platform_id) WHERE platform_id IS NOT NULL;

-- A venue's field-mapping overrides (CONTRACT section 4).
CREATE TABLE IF NOT EXISTS field_mappings (
    venue_id    text NOT NULL,
    provider    text NOT NULL,
    entity      text NOT NULL,
    document    jsonb NOT NULL,
    version     integer NOT NULL DEFAULT 1,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (venue_id, provider, entity)
);

-- Periodic incremental pulls; claimed with FOR UPDATE SKIP LOCKED so that several `run`
-- processes publish each due time once.
CREATE TABLE IF NOT EXISTS schedules (
    venue_id       text NOT NULL,
    provider       text NOT NULL,
    entity         text NOT NULL,
    every_seconds  integer NOT NULL CHECK (every_seconds >= 60),
    options        jsonb NOT NULL DEFAULT '{}'::jsonb,
    next_run_at    timestamptz NOT NULL,
    last_run_at    timestamptz,
    last_job_id    text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (venue_id, provider, entity)
);
CREATE INDEX IF NOT EXISTS schedules_due_idx ON schedules (next_run_at);

-- Received webhook events, for dedupe; pruned after the providers' retry horizon.
CREATE TABLE IF NOT EXISTS webhook_events (
    provider      text NOT NULL,
    event_id      text NOT NULL,
    venue_id      text,
    received_at   timestamptz NOT NULL,
    processed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, event_id)
);
CREATE INDEX IF NOT EXISTS webhook_events_processed_idx ON webhook_events (processed_at);

-- The latest provider health check per provider, shared by every process.
CREATE TABLE IF NOT EXISTS provider_health (
    provider               text PRIMARY KEY,
    state                  text NOT NULL CHECK (state IN ('healthy', 'degraded', 'unhealthy')),
    consecutive_failures   integer NOT NULL DEFAULT 0,
    last_error             text,
    response_time_seconds  double precision,
    checked_at             timestamptz NOT NULL DEFAULT now()
);

-- Transactional outbox: events and job results are written in the same transaction as the
-- outcome they describe, then published with confirms and marked; a crash between commit
-- and publish leaves the row for the next relay pass (at-least-once).
CREATE TABLE IF NOT EXISTS outbox (
    id              bigserial PRIMARY KEY,
    exchange        text NOT NULL,
    routing_key     text NOT NULL,
    message_id      text NOT NULL UNIQUE,
    correlation_id  text,
    headers         jsonb NOT NULL DEFAULT '{}'::jsonb,
    reply_to        text,
    body            bytea NOT NULL,  -- the exact bytes to publish (a retry republishes the original)
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- available_at in the future makes a row a scheduled retry: the relay republishes it when
    -- due, so a delivery is never held unacknowledged while it waits.
    available_at    timestamptz NOT NULL DEFAULT now(),
    published_at    timestamptz
);
CREATE INDEX IF NOT EXISTS outbox_due_idx ON outbox (available_at, id) WHERE published_at IS NULL;
-- Housekeeping deletes published rows after a day, a batch at a time, found by this index
-- (without it every batch would read the whole table).
CREATE INDEX IF NOT EXISTS outbox_published_idx ON outbox (published_at) WHERE published_at IS NOT NULL;

-- Dead letters: stored before they are published to integration.dead and before the
-- original is acknowledged (CONTRACT section 3).
CREATE TABLE IF NOT EXISTS dead_letters (
    id                 bigserial PRIMARY KEY,
    message_id         text,
    job_id             text,
    exchange           text NOT NULL,
    routing_key        text NOT NULL,
    body               bytea NOT NULL,
    headers            jsonb NOT NULL DEFAULT '{}'::jsonb,
    properties         jsonb NOT NULL DEFAULT '{}'::jsonb,
    reason             text NOT NULL,
    category           text NOT NULL,
    severity           text NOT NULL,
    dead_lettered_at   timestamptz NOT NULL DEFAULT now(),
    replayed_at        timestamptz,
    replay_message_id  text
);
CREATE INDEX IF NOT EXISTS dead_letters_at_idx ON dead_letters (dead_lettered_at DESC);
CREATE UNIQUE INDEX IF NOT EXISTS dead_letters_message_idx
    ON dead_letters (message_id, routing_key) WHERE message_id IS NOT NULL AND replayed_at IS NULL;

-- Rate limiting shared by every process (issue 6): one bucket per (provider, account).
CREATE TABLE IF NOT EXISTS rate_limit_buckets (
    provider      text NOT NULL,
    account       text NOT NULL,
    state         jsonb NOT NULL DEFAULT '{}'::jsonb,
    paused_until  double precision NOT NULL DEFAULT 0,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    version       bigint NOT NULL DEFAULT 0,  -- bumped by every write: compare-and-set
    PRIMARY KEY (provider, account)
);
ALTER TABLE rate_limit_buckets ADD COLUMN IF NOT EXISTS version bigint NOT NULL DEFAULT 0;
-- A process alone on an account owns it for a short lease and grants from its own copy
-- (service/database/ratelimit.py); another process that needs the account sets `wanted`.
ALTER TABLE rate_limit_buckets ADD COLUMN IF NOT EXISTS owner text;
ALTER TABLE rate_limit_buckets ADD COLUMN IF NOT EXISTS owner_until double precision NOT NULL DEFAULT 0;
ALTER TABLE rate_limit_buckets ADD COLUMN IF NOT EXISTS wanted boolean NOT NULL DEFAULT false;
-- A hand-made UPDATE (an operator lifting a pause) bumps the version too, so every process
-- sees it on its next write instead of overwriting it with a copy from before (an owner
-- loses the row to it). Only raising `wanted` leaves the version alone: the owner's next
-- renewal must still match it, and then sees the flag.
CREATE OR REPLACE FUNCTION rate_limit_buckets_bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.version = OLD.version AND (NEW.state, NEW.paused_until, NEW.owner, NEW.owner_until)
            IS DISTINCT FROM (OLD.state, OLD.paused_until, OLD.owner, OLD.owner_until) THEN
        NEW.version := OLD.version + 1;
    END IF;
    RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS rate_limit_buckets_bump ON rate_limit_buckets;
CREATE TRIGGER rate_limit_buckets_bump BEFORE UPDATE ON rate_limit_buckets
    FOR EACH ROW EXECUTE FUNCTION rate_limit_buckets_bump();
