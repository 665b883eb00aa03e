"""The whole API through the client openapi-python-client generated from the live
/openapi.json. Run by tests/it/generated_client.rs, which generates the client (on PYTHONPATH),
starts the server with an SMS provider stub and sets:

MESSAGING_URL, MESSAGING_API_KEY  the server and an admin key
PROVIDER_CONTROL_URL             POST {"status": 400} makes the stub refuse every SMS
                                 (permanently), {"status": 200} accept again

Every call goes through the generated code; each 202 is followed to its final status. Any
surprise raises, which fails the test.
"""

import datetime
import json
import os
import time
import urllib.request

from messaging_server_client import AuthenticatedClient, Client
from messaging_server_client.api.addresses import add_address, list_addresses, remove_address
from messaging_server_client.api.conversations import (
    get_conversation,
    list_conversation_messages,
    list_conversations,
)
from messaging_server_client.api.dead_letters import (
    delete_dead_letter,
    delete_dead_letters,
    get_dead_letter,
    list_dead_letters,
    replay_all_dead_letters,
    replay_dead_letter,
)
from messaging_server_client.api.messages import get_message_status, send_email, send_sms
from messaging_server_client.api.operations import get_stats, health, metrics, openapi, readiness
from messaging_server_client.api.webhooks import receive_email, receive_sms
from messaging_server_client.models import (
    Accepted,
    NewAddress,
    EmailWebhook,
    MmsWebhook,
    Problem,
    SendEmail,
    SendMms,
    SendSmsText,
    SendSmsTextMetadataType0,
    SmsWebhookText,
)

URL = os.environ["MESSAGING_URL"]
CONTROL = os.environ["PROVIDER_CONTROL_URL"]
# Generous: the suite runs on busy machines; a healthy server settles in milliseconds.
DEADLINE_SECONDS = 30
FINAL = {"sent", "received", "dead_lettered"}
SHOP, ALICE, BOB = "+12016661234", "+18045551234", "+14155550100"
AT = datetime.datetime(2024, 11, 1, 14, 0, tzinfo=datetime.timezone.utc)

client = AuthenticatedClient(base_url=URL, token=os.environ["MESSAGING_API_KEY"])
anonymous = Client(base_url=URL)


def expect(response, status, what):
    """The parsed answer, after checking its status."""
    assert response.status_code == status, (
        f"{what}: expected {status}, got {response.status_code}: {response.content!r}"
    )
    return response.parsed


def poll(what, check):
    """Calls `check` until it returns a value (not None), or fails at the deadline."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        value = check()
        if value is not None:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def accepted(response, what):
    answer = expect(response, 202, what)
    assert isinstance(answer, Accepted), answer
    assert answer.status_url == f"/api/messages/{answer.idempotency_key}", answer
    assert response.headers["location"] == answer.status_url
    return answer


def follow(answer, final, what):
    """Polls the status resource the 202 named until the message is settled."""

    def settled():
        status = expect(
            get_message_status.sync_detailed(answer.idempotency_key, client=client),
            200,
            f"status of {what}",
        )
        return status if status.status.value in FINAL else None

    status = poll(f"{what} to settle", settled)
    assert status.status.value == final, f"{what}: {status.to_dict()}"
    assert status.idempotency_key == answer.idempotency_key
    if final != "dead_lettered":
        assert status.message_id and status.conversation_id, status.to_dict()
    return status


def provider(status):
    request = urllib.request.Request(
        CONTROL,
        data=json.dumps({"status": status}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request) as answer:
        assert answer.status == 204, answer.status


def operations():
    assert expect(health.sync_detailed(client=anonymous), 200, "health").status.value == "ok"

    def ready():
        response = readiness.sync_detailed(client=anonymous)
        return response.parsed if response.status_code == 200 else None

    assert poll("readiness", ready).checks.queue.value == "memory"
    document = expect(openapi.sync_detailed(client=anonymous), 200, "openapi").to_dict()
    assert document["openapi"] == "3.1.0", document.keys()


def sending():
    """Outbound SMS, MMS and email, each followed to `sent`; an idempotent repeat; errors."""
    sms = SendSmsText(
        from_=SHOP,
        to=ALICE,
        type_="sms",
        body="Hello from the generated client",
        timestamp=AT,
        metadata=SendSmsTextMetadataType0.from_dict({"campaign": "generated"}),
    )
    first = accepted(send_sms.sync_detailed(client=client, body=sms, idempotency_key="gen-sms-1"), "sms")
    status = follow(first, "sent", "sms")
    assert status.provider_message_id == f"stub-{first.idempotency_key}", status.to_dict()
    again = accepted(send_sms.sync_detailed(client=client, body=sms, idempotency_key="gen-sms-1"), "repeat")
    assert again.idempotency_key == first.idempotency_key
    other = SendSmsText(from_=SHOP, to=ALICE, type_="sms", body="another message")
    reused = expect(
        send_sms.sync_detailed(client=client, body=other, idempotency_key="gen-sms-1"), 422, "reused key"
    )
    assert isinstance(reused, Problem) and reused.type_.endswith(":idempotency-key-reused"), reused

    mms = SendMms(from_=SHOP, to=ALICE, type_="mms", body="A picture", attachments=["https://example.com/a.png"])
    follow(accepted(send_sms.sync_detailed(client=client, body=mms), "mms"), "sent", "mms")

    email = SendEmail(
        from_="shop@example.com",
        to="alice@example.com",
        subject="Hello",
        body="<p>Hello from the generated client</p>",
        attachments=["https://example.com/receipt.pdf"],
    )
    follow(accepted(send_email.sync_detailed(client=client, body=email), "email"), "sent", "email")

    bad = SendSmsText(from_="12345", to=ALICE, type_="sms", body="x")
    invalid = expect(send_sms.sync_detailed(client=client, body=bad), 400, "invalid sms")
    assert [e.field for e in invalid.errors] == ["from"], invalid.to_dict()


def addresses():
    """The shop owns its number and email domain: inbound messages to them are its own."""
    for address in (SHOP, "example.com"):
        owned = expect(add_address.sync_detailed(client=client, body=NewAddress(address=address)), 201, address)
        assert owned.address == address, owned.to_dict()
    expect(add_address.sync_detailed(client=client, body=NewAddress(address=SHOP)), 409, "owned twice")
    spare = expect(add_address.sync_detailed(client=client, body=NewAddress(address=BOB)), 201, "spare")
    expect(remove_address.sync_detailed(spare.id, client=client), 204, "given up")
    listed = expect(list_addresses.sync_detailed(client=client), 200, "addresses")
    assert sorted(a.address for a in listed.items) == sorted([SHOP, "example.com"]), listed.to_dict()


def webhooks():
    """Inbound SMS, MMS and email, each followed to `received`; a redelivery is one message."""
    inbound = SmsWebhookText(from_=ALICE, to=SHOP, type_="sms", messaging_provider_id="gen-in-1", body="Hi back")
    first = accepted(receive_sms.sync_detailed(client=client, body=inbound), "inbound sms")
    follow(first, "received", "inbound sms")
    redelivered = accepted(receive_sms.sync_detailed(client=client, body=inbound), "redelivery")
    assert redelivered.idempotency_key == first.idempotency_key
    picture = MmsWebhook(
        from_=ALICE,
        to=SHOP,
        type_="mms",
        messaging_provider_id="gen-in-2",
        body="A picture back",
        attachments=["https://example.com/b.png"],
    )
    follow(accepted(receive_sms.sync_detailed(client=client, body=picture), "inbound mms"), "received", "inbound mms")
    email = EmailWebhook(from_="alice@example.com", to="shop@example.com", xillio_id="gen-in-3", body="Thanks!")
    follow(accepted(receive_email.sync_detailed(client=client, body=email), "inbound email"), "received", "inbound email")


def conversations():
    """Two conversations: SHOP–ALICE by SMS (4 messages: the repeats are not stored) and by
    email (2)."""
    page = expect(list_conversations.sync_detailed(client=client, page=1, page_size=50), 200, "conversations")
    assert page.meta.total == 2 and page.meta.page == 1, page.to_dict()
    by_channel = {c.channel.value: c for c in page.items}
    sms, email = by_channel["sms"], by_channel["email"]
    assert sms.participants == sorted([SHOP, ALICE]), sms.to_dict()
    assert (sms.message_count, email.message_count) == (4, 2), page.to_dict()
    one = expect(get_conversation.sync_detailed(sms.id, client=client), 200, "conversation")
    assert one.to_dict() == sms.to_dict()
    messages = expect(
        list_conversation_messages.sync_detailed(sms.id, client=client, page_size=2), 200, "messages"
    )
    assert messages.meta.total == 4 and len(messages.items) == 2, messages.to_dict()
    messages = expect(list_conversation_messages.sync_detailed(sms.id, client=client), 200, "messages")
    seen = sorted((m.direction.value, m.channel.value, m.status.value) for m in messages.items)
    assert seen == [
        ("inbound", "mms", "received"),
        ("inbound", "sms", "received"),
        ("outbound", "mms", "sent"),
        ("outbound", "sms", "sent"),
    ], seen
    missing = expect(get_conversation.sync_detailed(10**9, client=client), 404, "unknown conversation")
    assert missing.type_.endswith(":not-found"), missing


def dead_letters():
    """A message the provider refuses is dead-lettered; replayed once the provider accepts."""

    def refused(body):
        provider(400)
        sms = SendSmsText(from_=SHOP, to=BOB, type_="sms", body=body)
        answer = accepted(send_sms.sync_detailed(client=client, body=sms), body)
        status = follow(answer, "dead_lettered", body)
        assert status.last_error, status.to_dict()
        provider(200)
        return answer

    answer = refused("refused once")
    page = expect(list_dead_letters.sync_detailed(client=client), 200, "dead letters")
    assert page.meta.total == 1, page.to_dict()
    letter = page.items[0]
    assert letter.idempotency_key == answer.idempotency_key and letter.replayed_at is None, letter.to_dict()
    assert letter.error_kind.value == "permanent", letter.to_dict()
    shown = expect(get_dead_letter.sync_detailed(letter.id, client=client), 200, "dead letter")
    assert shown.to_dict() == letter.to_dict()
    replayed = expect(replay_dead_letter.sync_detailed(letter.id, client=client), 202, "replay")
    assert replayed.id == letter.id and replayed.status.value == "replayed"
    follow(answer, "sent", "the replayed message")
    expect(replay_dead_letter.sync_detailed(letter.id, client=client), 409, "second replay")

    second = refused("refused twice")
    everything = expect(replay_all_dead_letters.sync_detailed(client=client), 202, "replay all")
    assert everything.replayed == 1, everything.to_dict()
    follow(second, "sent", "the message replayed with the others")

    expect(delete_dead_letter.sync_detailed(letter.id, client=client), 204, "delete")
    expect(get_dead_letter.sync_detailed(letter.id, client=client), 404, "deleted dead letter")
    expect(delete_dead_letter.sync_detailed(letter.id, client=client), 404, "second delete")
    deleted = expect(delete_dead_letters.sync_detailed(client=client), 200, "delete all")
    assert deleted.deleted == 1, deleted.to_dict()
    assert expect(list_dead_letters.sync_detailed(client=client), 200, "dead letters").meta.total == 0


def stats():
    summary = expect(get_stats.sync_detailed(client=client), 200, "stats")
    totals = summary.totals
    assert summary.ready and summary.queue_backend.value == "memory", summary.to_dict()
    # 3 sends, 2 refused then replayed; 3 webhooks (the repeat and redelivery are duplicates).
    assert totals.sent == 5 and totals.dead_lettered == 2, summary.to_dict()
    assert summary.dlq_size == 0, summary.to_dict()
    text = expect(metrics.sync_detailed(client=anonymous), 200, "metrics")
    assert "\nmessaging_dlq_total 2\n" in text, text


operations()
sending()
addresses()
webhooks()
conversations()
dead_letters()
stats()
print("the generated client did everything")
