"""Schemathesis hooks for tests/it/contract.rs (loaded through SCHEMATHESIS_HOOKS).

`customer_id` must name an existing customer, which no schema can say: like an id in a
path that must exist, except that an unknown customer in a body is a 400 field error,
not a 404. A generated UUID is replaced by the test's customer before the request is
sent; values that are not UUIDs (negative cases) are left as generated.
"""

import os
import re
import uuid

import schemathesis
from twilio.request_validator import RequestValidator

CUSTOMER = os.environ["MESSAGING_TEST_CUSTOMER_ID"]
# A message the test stored before the run: a well-formed generated key in a status URL is
# replaced by it, so the positive cases reach a real message instead of 404 every time.
MESSAGE_KEY = os.environ["MESSAGING_TEST_MESSAGE_KEY"]
KEY = re.compile("^[0-9a-f]{64}\\Z")
# Dead letters the test made before the run: a generated id on a dead-letter route picks one
# of them (negative ids and non-numbers stay as generated).
DEAD_LETTERS = [int(i) for i in os.environ["MESSAGING_TEST_DEAD_LETTER_IDS"].split(",")]
# Twilio's webhooks are signed as Twilio signs them, by Twilio's own library, over the URL
# the server is configured to be reached at.
TWILIO = RequestValidator(os.environ["MESSAGING_TEST_TWILIO_TOKEN"])
TWILIO_PUBLIC_URL = os.environ["MESSAGING_TEST_TWILIO_PUBLIC_URL"]
HEX = "[0-9a-fA-F]"
HYPHENATED = HEX + "{8}-" + HEX + "{4}-" + HEX + "{4}-" + HEX + "{4}-" + HEX + "{12}"
# The forms the server reads (hyphenated, simple, braced, URN); anything else stays invalid.
UUID = re.compile(
    "^(?:" + HYPHENATED + "|" + HEX + "{32}|\\{" + HYPHENATED + "\\}|urn:uuid:" + HYPHENATED + ")\\Z"
)


@schemathesis.hook
def map_path_parameters(context, path_parameters):
    """Well-formed generated identifiers point at the data the test made (see above)."""
    if not path_parameters:
        return path_parameters
    path = context.operation.path
    key = path_parameters.get("idempotency_key")
    if isinstance(key, str) and KEY.search(key):
        path_parameters["idempotency_key"] = MESSAGE_KEY
    value = path_parameters.get("id")
    if path.startswith("/api/dlq/") and isinstance(value, int) and value >= 0:
        path_parameters["id"] = DEAD_LETTERS[value % len(DEAD_LETTERS)]
    return path_parameters


@schemathesis.hook
def before_call(context, case, kwargs):
    body = case.body
    if isinstance(body, dict):
        value = body.get("customer_id")
        if isinstance(value, str) and UUID.search(value):
            body["customer_id"] = CUSTOMER
    # A provider never reuses its message id for another message, and the server answers
    # 409 to an id it has seen with other content: a valid generated id (which Hypothesis
    # repeats, e.g. "0") is made unique for the case, so the positive cases stay positive.
    if isinstance(body, dict) and case.operation.path.startswith("/api/webhooks/"):
        for field in ("messaging_provider_id", "xillio_id"):
            value = body.get(field)
            if isinstance(value, str) and value.strip() and value.isprintable() and len(value) <= 200:
                body[field] = value + "-" + uuid.uuid4().hex[:16]
    if case.operation.path.startswith("/api/providers/twilio/"):
        sign_as_twilio(case, body)


def sign_as_twilio(case, body):
    """X-Twilio-Signature over the form as it will be sent, in place of the generated one.
    A case without the header (a negative case: "missing signature"), or whose form is not
    a flat object of strings (numbers are sent as their text), is left as generated and
    refused (403)."""
    if "X-Twilio-Signature" not in (case.headers or {}):
        return
    if not isinstance(body, dict) or not all(
        isinstance(value, (str, int, float)) for value in body.values()
    ):
        return
    # Twilio never repeats a MessageSid for another message (as with the webhooks above).
    sid = body.get("MessageSid")
    if case.operation.path.endswith("/sms") and isinstance(sid, str) and sid.strip() and sid.isprintable() and len(sid) <= 200:
        body["MessageSid"] = sid + "-" + uuid.uuid4().hex[:16]
    params = {name: str(value) for name, value in body.items()}
    url = TWILIO_PUBLIC_URL + case.formatted_path
    case.headers["X-Twilio-Signature"] = TWILIO.compute_signature(url, params)
