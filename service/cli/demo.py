"""`integration-service demo`: the whole service working, in one command.

Starts the sandbox, the daemon and the ingress against the local RabbitMQ and PostgreSQL;
registers one sample venue per provider with credentials; for each provider runs a push
and a pull through the daemon and sends a signed webhook through the ingress; prints a
short table of what happened; stops everything; exits 0 only if every step worked.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from service.cli import CommandError, format_table, load, run_async
from service.cli.demo_stack import DEMO_CLIENTS, Stack

PROVIDERS = ("stripe", "square", "quickbooks", "mailchimp")
ENTITY = {"stripe": "customers", "square": "customers", "quickbooks": "customers", "mailchimp": "contacts"}
STEP_TIMEOUT_S = 60.0


@dataclass
class Row:
    provider: str
    venue: str
    push: str = "-"
    pull: str = "-"
    webhook: str = "-"
    events: int = 0
    ok: bool = True
    notes: list[str] = field(default_factory=list)


def people(prefix: str) -> list[dict[str, Any]]:
    names = [("Ada", "Lovelace"), ("Grace", "Hopper"), ("Alan", "Turing")]
    return [
        {
            "id": f"{prefix}-{i}",
            "email": f"{first.lower()}.{prefix}@example.com",
            "first_name": first,
            "last_name": last,
            "phone": f"+1415555{1000 + i}",
            "tags": ["demo"],
            "marketing_consent": True,
        }
        for i, (first, last) in enumerate(names)
    ]


class Demo:
    """One run of the scenario against a started Stack."""

    def __init__(self, settings: Any, stack: Stack) -> None:
        self.settings = settings
        self.stack = stack
        self.run = uuid.uuid4().hex[:6]
        self.rows = {p: Row(p, f"demo-{p}-{self.run}") for p in PROVIDERS}
        self.secrets: dict[str, str] = {}

    async def sandbox(self, session: Any, method: str, path: str, payload: Any = None, **kw: Any) -> Any:
        async with session.request(method, self.stack.sandbox_url + path, json=payload, **kw) as reply:
            return await reply.json(content_type=None)

    # Accounts and credentials ---------------------------------------------------------

    async def register(self, session: Any, vault: Any) -> None:
        rows = self.rows
        stripe_key, square_key = f"sk_test_demo{uuid.uuid4().hex}", f"EAAAdemo{uuid.uuid4().hex}"
        mc_key, realm = f"{uuid.uuid4().hex}-us1", str(9_000_000_000 + int(time.time()) % 10**9)
        expires = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        qb = {
            "access_token": f"qb-{uuid.uuid4().hex}",
            "refresh_token": f"qbr-{uuid.uuid4().hex}",
            "expires_at": expires,
            "realm_id": realm,
        }
        whsec, mc_token = f"whsec_demo{uuid.uuid4().hex}", uuid.uuid4().hex
        accounts = [
            {
                "provider": "stripe",
                "account": rows["stripe"].venue,
                "api_key": stripe_key,
                "webhook_secret": whsec,
            },
            {"provider": "square", "account": rows["square"].venue, "api_key": square_key},
            {
                "provider": "quickbooks",
                "account": rows["quickbooks"].venue,
                "oauth": {
                    **qb,
                    "client_id": DEMO_CLIENTS["QUICKBOOKS_CLIENT_ID"],
                    "client_secret": DEMO_CLIENTS["QUICKBOOKS_CLIENT_SECRET"],
                },
            },
            {"provider": "mailchimp", "account": rows["mailchimp"].venue, "api_key": mc_key},
        ]
        for account in accounts:
            await self.sandbox(session, "POST", "/_sandbox/accounts", account)
        from service.lifecycle import learn_square_merchant

        await vault.set(rows["stripe"].venue, "stripe", "api_key", stripe_key)
        await vault.set(rows["stripe"].venue, "stripe", "webhook_secret", whsec)
        info = await vault.set(rows["square"].venue, "square", "api_key", square_key)
        await learn_square_merchant(self.settings, vault, info, square_key)
        await vault.set(rows["quickbooks"].venue, "quickbooks", "oauth", json.dumps(qb))
        await vault.set(rows["mailchimp"].venue, "mailchimp", "api_key", mc_key)
        await vault.set(rows["mailchimp"].venue, "mailchimp", "webhook_secret", mc_token)
        self.secrets = {
            "stripe": stripe_key,
            "square": square_key,
            "mailchimp": mc_key,
            "mc_token": mc_token,
            "realm": realm,
            "qb": qb["access_token"],
        }

    # Syncs ----------------------------------------------------------------------------

    async def sync(
        self,
        publisher: Any,
        pool: Any,
        provider: str,
        entity: str,
        *,
        records: Any = None,
        mode: str = "full",
        options: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        from service.database import jobs as jobs_db
        from service.messages import SyncRequest

        request = SyncRequest(
            job_id=str(uuid.uuid4()),
            venue_id=self.rows[provider].venue,
            provider=provider,
            entity=entity,
            direction="push" if records is not None else "pull",
            mode=mode,
            records=records,
            options=options or {},
        )
        await publisher.publish_sync_request(request, message_id=str(uuid.uuid4()))
        deadline = time.monotonic() + STEP_TIMEOUT_S
        while time.monotonic() < deadline:
            row = await jobs_db.get_job(pool, request.job_id)
            if row is not None and row["status"] in ("succeeded", "partial", "failed") and row["result"]:
                return dict(row["result"])
            await asyncio.sleep(0.1)
        raise CommandError(
            f"{provider} {entity} job {request.job_id} did not finish in {STEP_TIMEOUT_S:g} s", 1
        )

    async def syncs(self, publisher: Any, pool: Any, session: Any) -> None:
        for provider, row in self.rows.items():
            options: dict[str, Any] = {}
            if provider == "mailchimp":
                options["list_id"] = await self.mailchimp_list(publisher, pool, session)
            records = people(provider[:2])
            if provider == "quickbooks":
                records = [{**r, "company": f"{r['first_name']} Events"} for r in records]
            pushed = await self.sync(
                publisher, pool, provider, ENTITY[provider], records=records, options=options
            )
            pulled = await self.sync(publisher, pool, provider, ENTITY[provider], options=options)
            row.push = f"{pushed['status']} {pushed['counts']['created'] + pushed['counts']['updated']}/{len(records)}"
            row.pull = f"{pulled['status']} {pulled['counts']['processed']} read"
            row.ok &= pushed["status"] == "succeeded" and pulled["status"] == "succeeded"
            row.notes += [e["message"] for e in pushed["errors"] + pulled["errors"]][:2]

    async def mailchimp_list(self, publisher: Any, pool: Any, session: Any) -> str:
        audience = [
            {
                "id": "demo-list",
                "name": f"Members {self.run}",
                "company": "Demo Venue",
                "permission_reminder": "You bought a ticket",
                "from_name": "Demo Venue",
                "from_email": "box@example.com",
                "subject": "News",
                "language": "en",
                "address": {
                    "line1": "1 Main St",
                    "city": "Springfield",
                    "region": "IL",
                    "postal_code": "62701",
                    "country": "US",
                },
            }
        ]
        result = await self.sync(publisher, pool, "mailchimp", "lists", records=audience)
        if result["status"] != "succeeded":
            raise CommandError(f"mailchimp list was not created: {result['errors'][:1]}", 1)
        import base64

        auth = base64.b64encode(f"demo:{self.secrets['mailchimp']}".encode()).decode()
        async with session.get(
            f"{self.stack.sandbox_url}/mailchimp/3.0/lists", headers={"Authorization": f"Basic {auth}"}
        ) as reply:
            lists = (await reply.json())["lists"]
        return str(lists[0]["id"])

    # Webhooks -------------------------------------------------------------------------

    async def first_record(self, session: Any, provider: str) -> dict[str, Any]:
        """A record the push created, read back from the sandbox as the provider sends it."""
        headers = {"Authorization": f"Bearer {self.secrets[provider]}"}
        path = {"stripe": "/stripe/v1/customers?limit=1", "square": "/square/v2/customers"}[provider]
        async with session.get(self.stack.sandbox_url + path, headers=headers) as reply:
            body = await reply.json()
        return dict((body.get("data") or body.get("customers"))[0])

    async def webhook_specs(self, session: Any) -> dict[str, dict[str, Any]]:
        now, ingress = int(time.time()), self.stack.ingress_url
        stripe_customer = {**await self.first_record(session, "stripe"), "name": "Ada Byron"}
        square_customer = {**await self.first_record(session, "square"), "given_name": "Grace", "version": 99}
        qb_id = await self.any_external_id("quickbooks")
        rows = self.rows
        return {
            "stripe": {
                "account": rows["stripe"].venue,
                "url": f"{ingress}/webhooks/stripe/{rows['stripe'].venue}",
                "event": {
                    "id": f"evt_demo{uuid.uuid4().hex}",
                    "object": "event",
                    "created": now,
                    "type": "customer.updated",
                    "data": {"object": stripe_customer},
                },
            },
            "square": {
                "account": rows["square"].venue,
                "url": f"{ingress}/webhooks/square",
                "event": {
                    "type": "customer.updated",
                    "event_id": str(uuid.uuid4()),
                    "data": {
                        "type": "customer",
                        "id": square_customer["id"],
                        "object": {"customer": square_customer},
                    },
                },
            },
            "quickbooks": {
                "account": rows["quickbooks"].venue,
                "url": f"{ingress}/webhooks/quickbooks",
                "format": "cloudevents",
                "event": {"name": "Customer", "id": qb_id, "operation": "Update"},
            },
            "mailchimp": {
                "account": rows["mailchimp"].venue,
                "url": f"{ingress}/webhooks/mailchimp/{rows['mailchimp'].venue}/{self.secrets['mc_token']}",
                "event": {
                    "type": "subscribe",
                    "data": {
                        "email": f"webhook.{self.run}@example.com",
                        "list_id": self.list_id,
                        "merges": {"FNAME": "Katherine", "LNAME": "Johnson"},
                    },
                },
            },
        }

    async def any_external_id(self, provider: str) -> str:
        value = await self.pool.fetchval(
            "SELECT external_id FROM record_state WHERE venue_id = $1 AND provider = $2 LIMIT 1",
            self.rows[provider].venue,
            provider,
        )
        return str(value)

    async def webhooks(self, session: Any, events: asyncio.Queue[dict[str, Any]]) -> None:
        specs = await self.webhook_specs(session)
        for provider, spec in specs.items():
            answer = await self.sandbox(session, "POST", f"/_sandbox/webhooks/{provider}", spec)
            row = self.rows[provider]
            row.webhook = f"HTTP {answer.get('status')}"
            if answer.get("status") != 200:
                row.ok = False
                row.notes.append(f"ingress answered {answer.get('status')}: {answer.get('body')}")
        deadline = time.monotonic() + STEP_TIMEOUT_S
        waiting = set(specs)
        while waiting and time.monotonic() < deadline:
            try:
                event = await asyncio.wait_for(events.get(), timeout=max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                break
            provider = str(event.get("provider"))
            if (
                event.get("source") == "webhook"
                and provider in waiting
                and event.get("venue_id") == self.rows[provider].venue
            ):
                waiting.discard(provider)
                self.rows[provider].webhook += " -> record event"
        for provider in waiting:
            self.rows[provider].ok = False
            self.rows[provider].notes.append("no record event from the webhook")

    list_id: str = ""
    pool: Any = None


async def _count_events(pool: Any, venues: list[str]) -> dict[str, int]:
    rows = await pool.fetch(
        """SELECT convert_from(body, 'UTF8')::jsonb ->> 'venue_id' AS venue, count(*) AS n FROM outbox
           WHERE exchange = 'integration.events' AND routing_key NOT LIKE 'job.%'
             AND convert_from(body, 'UTF8')::jsonb ->> 'venue_id' = ANY($1::text[]) GROUP BY 1""",
        venues,
    )
    return {r["venue"]: r["n"] for r in rows}


async def _scenario(settings: Any, stack: Stack) -> tuple[list[Row], int]:
    import aio_pika
    import aiohttp

    from consumers.publishers import AmqpPublisher
    from consumers.topology import EVENTS_EXCHANGE
    from service.database import open_pool
    from service.vault import Vault, key_provider_from_settings

    demo = Demo(settings, stack)
    started = datetime.now(UTC)
    async with (
        open_pool(settings.database_url.get_secret_value(), min_size=1, max_size=4) as pool,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
    ):
        demo.pool = pool
        connection = await aio_pika.connect(
            settings.amqp_url.get_secret_value(),
            client_properties={"connection_name": "integration-service demo"},
        )
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
            probe = await channel.declare_queue(exclusive=True, auto_delete=True)
            await probe.bind(EVENTS_EXCHANGE, "#")

            async def collect(message: Any) -> None:
                async with message.process():
                    await events.put(json.loads(message.body))

            await probe.consume(collect)
            publisher = AmqpPublisher(channel)
            await demo.register(session, Vault(pool, key_provider_from_settings(settings)))
            await demo.syncs(publisher, pool, session)
            demo.list_id = (
                await pool.fetchval(
                    "SELECT options ->> 'list_id' FROM sync_jobs WHERE venue_id = $1 AND entity = 'contacts' LIMIT 1",
                    demo.rows["mailchimp"].venue,
                )
            ) or ""
            await demo.webhooks(session, events)
        counts = await _count_events(pool, [r.venue for r in demo.rows.values()])
        for row in demo.rows.values():
            row.events = counts.get(row.venue, 0)
        dead = await pool.fetchval("SELECT count(*) FROM dead_letters WHERE dead_lettered_at >= $1", started)
    return list(demo.rows.values()), int(dead)


def _table(rows: list[Row], dead: int) -> str:
    header = ("PROVIDER", "VENUE", "PUSH", "PULL", "WEBHOOK", "RECORD EVENTS")
    out = format_table(header, [(r.provider, r.venue, r.push, r.pull, r.webhook, str(r.events)) for r in rows])
    out.append(f"dead letters: {dead}")
    for row in rows:
        out += [f"  {row.provider}: {note}" for note in row.notes]
    return "\n".join(out)


@click.command()
def demo() -> None:
    """Run sandbox, daemon and ingress locally; push, pull and webhook for each provider.

    Uses the local RabbitMQ and PostgreSQL (AMQP_URL, DATABASE_URL), runs `migrate` first,
    prints a short table of what happened, stops everything, and exits 0 if it all worked.
    """
    import os

    from consumers.topology import declare_on
    from service.database import migrate_database

    stack = Stack()
    os.environ.update(
        {
            k: v
            for k, v in stack.env().items()
            if k not in os.environ
            or k.endswith(
                (
                    "_API_BASE",
                    "_OAUTH_URL",
                    "_METADATA_URL",
                    "_CLIENT_ID",
                    "_CLIENT_SECRET",
                    "INGRESS_PUBLIC_URL",
                    "_SIGNATURE_KEY",
                    "_VERIFIER_TOKEN",
                )
            )
        }
    )  # this process talks to the same sandbox
    settings = load()

    async def go() -> tuple[list[Row], int]:
        await migrate_database(settings.database_url.get_secret_value())
        await declare_on(settings.amqp_url.get_secret_value())
        click.echo(f"starting sandbox, daemon and ingress (logs in {stack.logs})", err=True)
        try:
            await stack.start()
            click.echo("running a push, a pull and a signed webhook for each provider...", err=True)
            return await _scenario(settings, stack)
        finally:
            codes = stack.stop()
            click.echo(f"stopped: {', '.join(f'{k} exit {v}' for k, v in codes.items())}", err=True)

    started = time.monotonic()
    rows, dead = run_async(go())
    click.echo(_table(rows, dead))
    click.echo(f"finished in {time.monotonic() - started:.1f} s", err=True)
    if not all(r.ok for r in rows) or dead:
        raise CommandError("the demo did not complete cleanly (see the table)", 1)


COMMANDS = [demo]
