"""What PostgreSQL alone spends per message on the writer's statements: no Rust, no sqlx.

    pip install 'psycopg[binary]'
    python3 bench/probes/pg_floor.py postgres://postgres@127.0.0.1:5432/MIGRATED [--messages N]
                                     [--insert values|unnest] [--foreign-keys keep|drop]

MIGRATED is a database the server has migrated (`messaging-server migrate up`); the probe
copies its schema into a fresh database of the same server (CREATE DATABASE … TEMPLATE),
writes N messages (default 200,000) in transactions of 1,000 as src/store/writer.rs
does: body insert `ON CONFLICT DO NOTHING RETURNING`, message insert (18 columns) with its
`RETURNING`, one counter upsert for the batch's conversations (which exist already, as the
writer's cache makes them in steady state), then the provider acceptances as one `UPDATE
… FROM (VALUES …)` in a second transaction; and drops the copy. Statements are prepared
server-side, as sqlx does. `--insert values` is what the server sends (a multi-row VALUES
list, 18,000 parameters for 1,000 messages); `unnest` sends one array per column instead
(18 parameters, the same statement text whatever the batch size). `--foreign-keys drop`
removes the messages table's two foreign keys (each inserted row otherwise runs two
referential-integrity look-ups that lock the referenced rows). Prints the wall time and
the CPU time of the PostgreSQL backend (from /proc: the probe must run on the database's
machine) per message.
"""
import argparse
from collections import Counter
import datetime
import hashlib
import os
import time
import uuid

import psycopg

CUSTOMER = uuid.UUID("00000000-0000-0000-0000-000000000001")
BATCH = 1000
COLUMNS = [  # name, PostgreSQL type (for UNNEST)
    ("conversation_id", "bigint"), ("customer_id", "uuid"), ("direction", "text"), ("channel", "text"),
    ("from_address", "text"), ("to_address", "text"), ("subject", "text"), ("body_id", "bigint"),
    ("attachments", "jsonb"), ("metadata", "jsonb"), ("sent_at", "timestamptz"),
    ("received_at", "timestamptz"), ("status", "text"), ("provider_message_id", "text"),
    ("idempotency_key", "text"), ("created_at", "timestamptz"), ("updated_at", "timestamptz"),
    ("request_fingerprint", "text"),
]
RETURNING = "RETURNING id, idempotency_key, conversation_id, status, request_fingerprint"


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    args = argparse.ArgumentParser()
    args.add_argument("migrated_url")
    args.add_argument("--messages", type=int, default=200_000)
    args.add_argument("--insert", choices=["values", "unnest"], default="values")
    args.add_argument("--foreign-keys", choices=["keep", "drop"], default="keep")
    a = args.parse_args()
    base, _, template = a.migrated_url.rpartition("/")
    copy = f"pg_floor_{os.getpid()}"
    with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{copy}" TEMPLATE "{template}"')
        try:
            with psycopg.connect(f"{base}/{copy}", prepare_threshold=0) as db:
                run(a, db)
        finally:
            admin.execute(f'DROP DATABASE "{copy}"')


def run(a, db):
    if a.foreign_keys == "drop":
        db.execute("ALTER TABLE messages DROP CONSTRAINT fk_messages_body_id, DROP CONSTRAINT fk_messages_conversation_id")
    now = datetime.datetime.now(datetime.timezone.utc)
    db.execute("INSERT INTO customers(id, name, created_at) VALUES (%s, 'probe', %s) ON CONFLICT DO NOTHING", (CUSTOMER, now))
    conversations = [
        db.execute(
            "INSERT INTO conversations(customer_id, channel, participant_a, participant_b, message_count, "
            "created_at, updated_at) VALUES (%s, 'sms', %s, %s, 0, %s, %s) RETURNING id",
            (CUSTOMER, f"+1555000{s:04d}", f"+1444{c:07d}", now, now),
        ).fetchone()[0]
        for s in range(10)
        for c in range(1000)
    ]
    db.commit()
    backend = db.execute("SELECT pg_backend_pid()").fetchone()[0]
    db.commit()
    names = ",".join(name for name, _ in COLUMNS)
    unnest_messages = (
        f"INSERT INTO messages({names}) SELECT * FROM UNNEST("
        + ",".join(f"%s::{kind}[]" for _, kind in COLUMNS)
        + f") ON CONFLICT (idempotency_key) DO NOTHING {RETURNING}"
    )
    nonce = os.urandom(8).hex()
    spent = dict.fromkeys(["bodies", "messages", "counters", "commit", "acceptances"], 0.0)
    clock = time.perf_counter
    cpu0, started = cpu_seconds(backend), clock()
    for first in range(0, a.messages, BATCH):
        batch = range(first, min(first + BATCH, a.messages))
        bodies = [(hashlib.sha256(f"body {nonce} {i}".encode()).hexdigest(), f"Hello {nonce} {i}, code 1234") for i in batch]
        t = clock()
        if a.insert == "values":
            cur = db.execute(
                "INSERT INTO message_bodies(sha256, body) VALUES " + ",".join(["(%s,%s)"] * len(bodies))
                + " ON CONFLICT (sha256) DO NOTHING RETURNING id, sha256",
                [v for body in bodies for v in body])
        else:
            cur = db.execute(
                "INSERT INTO message_bodies(sha256, body) SELECT * FROM UNNEST(%s::text[], %s::text[])"
                " ON CONFLICT (sha256) DO NOTHING RETURNING id, sha256",
                [[sha for sha, _ in bodies], [body for _, body in bodies]])
        body_ids = {sha: id_ for id_, sha in cur.fetchall()}
        spent["bodies"] += clock() - t
        rows = [
            (conversations[i % len(conversations)], CUSTOMER, "outbound", "sms", "+15550000001", "+14440000001",
             None, body_ids[sha], "[]", None, now, now, "queued", None,
             hashlib.sha256(f"key {nonce} {i}".encode()).hexdigest(), now, now,
             hashlib.sha256(f"fingerprint {i}".encode()).hexdigest())
            for i, (sha, _) in zip(batch, bodies)
        ]
        t = clock()
        if a.insert == "values":
            cur = db.execute(
                f"INSERT INTO messages({names}) VALUES "
                + ",".join(["(" + ",".join(["%s"] * len(COLUMNS)) + ")"] * len(rows))
                + f" ON CONFLICT (idempotency_key) DO NOTHING {RETURNING}",
                [v for row in rows for v in row])
        else:
            cur = db.execute(unnest_messages, [list(column) for column in zip(*rows)])
        inserted = cur.fetchall()
        spent["messages"] += clock() - t
        assert len(inserted) == len(rows)
        bumps = Counter(row[0] for row in rows)  # messages per conversation
        t = clock()
        db.execute(
            "UPDATE conversations SET message_count = message_count + v.n, last_message_at = %s, updated_at = %s "
            "FROM UNNEST(%s::bigint[], %s::bigint[]) AS v(id, n) WHERE conversations.id = v.id",
            (now, now, sorted(bumps), [bumps[k] for k in sorted(bumps)]))
        spent["counters"] += clock() - t
        t = clock()
        db.commit()
        spent["commit"] += clock() - t
        t = clock()
        db.execute(
            "UPDATE messages SET status = 'sent', provider_message_id = v.column2, updated_at = %s FROM (VALUES "
            + ",".join(["(%s::bigint,%s)"] * len(inserted))
            + ") AS v WHERE messages.id = v.column1 AND status = 'queued'",
            [now] + [v for row in inserted for v in (row[0], f"mock-{row[0]}")])
        db.commit()
        spent["acceptances"] += clock() - t
    total, cpu = clock() - started, cpu_seconds(backend) - cpu0
    per = {k: round(v / a.messages * 1e6, 1) for k, v in spent.items()}
    print(f"insert={a.insert} foreign-keys={a.foreign_keys}: {a.messages} messages in {total:.2f} s = "
          f"{total / a.messages * 1e6:.1f} µs/message wall, PostgreSQL backend CPU {cpu / a.messages * 1e6:.1f} µs/message; "
          f"wall per statement {per}")


if __name__ == "__main__":
    main()
