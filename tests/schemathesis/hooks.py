"""Schemathesis hooks for tests/contract.rs (loaded through SCHEMATHESIS_HOOKS).

`customer_id` must name an existing customer, which no schema can say: like an id in a
path that must exist, except that an unknown customer in a body is a 400 field error,
not a 404. A generated UUID is replaced by the test's customer before the request is
sent; values that are not UUIDs (negative cases) are left as generated.
"""

import os
import re

import schemathesis

CUSTOMER = os.environ["MESSAGING_TEST_CUSTOMER_ID"]
HEX = "[0-9a-fA-F]"
HYPHENATED = HEX + "{8}-" + HEX + "{4}-" + HEX + "{4}-" + HEX + "{4}-" + HEX + "{12}"
# The forms the server reads (hyphenated, simple, braced, URN); anything else stays invalid.
UUID = re.compile(
    "^(?:" + HYPHENATED + "|" + HEX + "{32}|\\{" + HYPHENATED + "\\}|urn:uuid:" + HYPHENATED + ")\\Z"
)


@schemathesis.hook
def before_call(context, case, kwargs):
    body = case.body
    if isinstance(body, dict):
        value = body.get("customer_id")
        if isinstance(value, str) and UUID.search(value):
            body["customer_id"] = CUSTOMER
