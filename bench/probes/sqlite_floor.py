"""What SQLite alone spends per message on the writer's statements: no Rust, no sqlx.

    python3 bench/probes/sqlite_floor.py MIGRATED.sqlite [--messages N] [--keys hex|blob|body-blob|key-blob]
                                         [--checkpoints writer|elsewhere]

MIGRATED.sqlite is any database the server has migrated (`messaging-server migrate up`);
its schema is copied into a fresh file in a temporary directory. The probe then writes N
messages (default 200,000) in transactions of 1,000 as src/store/writer.rs does: body
insert `ON CONFLICT DO NOTHING RETURNING`, message insert (18 columns) with its
`RETURNING`, the conversation counters (conversations exist already, as the writer's cache
makes them in steady state), then the provider acceptances as one `UPDATE … FROM (VALUES
…)` in a second transaction. Same pragmas as the server (WAL, synchronous NORMAL,
foreign keys). `--keys` stores the body sha256 and the idempotency key as 64-character hex
(what the server does) or as 32-byte BLOBs (one or both); `--checkpoints writer` lets
SQLite checkpoint inside commits (its default), `elsewhere` turns that off, as the server
does (its checkpoints run on a connection of their own). Prints µs per message, in all and
per statement.
"""
import argparse
from collections import Counter
import hashlib
import os
import shutil
import sqlite3
import tempfile
import time

CUSTOMER = "00000000-0000-0000-0000-000000000001"
BATCH = 1000
MESSAGE_COLUMNS = (
    "conversation_id,customer_id,direction,channel,from_address,to_address,subject,body_id,"
    "attachments,metadata,sent_at,received_at,status,provider_message_id,idempotency_key,"
    "created_at,updated_at,request_fingerprint"
)


def main():
    args = argparse.ArgumentParser()
    args.add_argument("migrated")
    args.add_argument("--messages", type=int, default=200_000)
    args.add_argument("--keys", choices=["hex", "blob", "body-blob", "key-blob"], default="hex")
    args.add_argument("--checkpoints", choices=["writer", "elsewhere"], default="elsewhere")
    a = args.parse_args()
    work = tempfile.mkdtemp(prefix="sqlite-floor.")
    try:
        run(a, os.path.join(work, "floor.sqlite"))
    finally:
        shutil.rmtree(work)


def run(a, path):
    schema = [
        row[0]
        for row in sqlite3.connect(a.migrated).execute(
            "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' "
            "ORDER BY type DESC"  # tables before indexes
        )
    ]
    db = sqlite3.connect(path, isolation_level=None)
    pragmas = ["foreign_keys=ON", "journal_mode=WAL", "synchronous=NORMAL", "temp_store=memory"]
    if a.checkpoints == "elsewhere":
        pragmas.append("wal_autocheckpoint=0")
    for pragma in pragmas:
        db.execute("PRAGMA " + pragma)
    for statement in schema:
        db.execute(statement)
    db.execute(
        "INSERT OR IGNORE INTO customers(id, name, created_at) VALUES (?, 'probe', '2026-01-01')",
        (CUSTOMER,),
    )
    # The benchmark's pools: 10 senders x 1,000 contacts.
    conversations = [
        db.execute(
            "INSERT INTO conversations(customer_id, channel, participant_a, participant_b, "
            "message_count, created_at, updated_at) VALUES (?, 'sms', ?, ?, 0, 't', 't') RETURNING id",
            (CUSTOMER, f"+1555000{s:04d}", f"+1444{c:07d}"),
        ).fetchone()[0]
        for s in range(10)
        for c in range(1000)
    ]
    blob_body = a.keys in ("blob", "body-blob")
    blob_key = a.keys in ("blob", "key-blob")

    def digest(text, blob):
        d = hashlib.sha256(text.encode()).digest()
        return d if blob else d.hex()

    nonce = os.urandom(8).hex()
    spent = dict.fromkeys(["bodies", "messages", "counters", "commit", "acceptances"], 0.0)
    clock = time.perf_counter
    started = clock()
    for first in range(0, a.messages, BATCH):
        batch = range(first, min(first + BATCH, a.messages))
        bodies = [(digest(f"body {nonce} {i}", blob_body), f"Hello {nonce} {i}, code 1234") for i in batch]
        db.execute("BEGIN IMMEDIATE")
        t = clock()
        body_ids = {
            sha: id_
            for id_, sha in db.execute(
                "INSERT INTO message_bodies(sha256, body) VALUES "
                + ",".join(["(?,?)"] * len(bodies))
                + " ON CONFLICT(sha256) DO NOTHING RETURNING id, sha256",
                [v for body in bodies for v in body],
            )
        }
        spent["bodies"] += clock() - t
        rows = [
            (
                conversations[i % len(conversations)], CUSTOMER, "outbound", "sms",
                "+15550000001", "+14440000001", None, body_ids[sha], "[]", None,
                "2026-11-28 00:00:00.000001+00:00", "2026-11-28 00:00:00.000001+00:00",
                "queued", None, digest(f"key {nonce} {i}", blob_key),
                "2026-11-28 00:00:00+00:00", "2026-11-28 00:00:00+00:00",
                digest(f"fingerprint {i}", False),
            )
            for i, (sha, _) in zip(batch, bodies)
        ]
        values = [v for row in rows for v in row]
        t = clock()
        inserted = db.execute(
            f"INSERT INTO messages({MESSAGE_COLUMNS}) VALUES "
            + ",".join(["(" + ",".join("?" * 18) + ")"] * len(rows))
            + " ON CONFLICT(idempotency_key) DO NOTHING"
            " RETURNING id, idempotency_key, conversation_id, status, request_fingerprint",
            values,
        ).fetchall()
        spent["messages"] += clock() - t
        assert len(inserted) == len(rows)
        bumps = Counter(row[0] for row in rows)  # messages per conversation
        t = clock()
        db.executemany(
            "UPDATE conversations SET message_count = message_count + ?, last_message_at = ? WHERE id = ?",
            [(count, "2026-11-28", id_) for id_, count in sorted(bumps.items())],
        )
        spent["counters"] += clock() - t
        t = clock()
        db.execute("COMMIT")
        spent["commit"] += clock() - t
        t = clock()
        db.execute("BEGIN IMMEDIATE")
        db.execute(
            "UPDATE messages SET status = 'sent', provider_message_id = v.column2, "
            "updated_at = '2026-11-28 00:00:01+00:00' FROM (VALUES "
            + ",".join(["(?,?)"] * len(inserted))
            + ") AS v WHERE messages.id = v.column1 AND status = 'queued'",
            [v for row in inserted for v in (row[0], f"mock-{row[0]}")],
        )
        db.execute("COMMIT")
        spent["acceptances"] += clock() - t
    total = clock() - started
    per = {k: round(v / a.messages * 1e6, 1) for k, v in spent.items()}
    print(
        f"keys={a.keys} checkpoints={a.checkpoints} sqlite={sqlite3.sqlite_version}: "
        f"{a.messages} messages in {total:.2f} s = {total / a.messages * 1e6:.1f} µs/message; per statement {per}"
    )


if __name__ == "__main__":
    main()
