"""Signs a request as Twilio does, with Twilio's own helper library (tests/it/providers/twilio.rs).

Reads {"token": ..., "url": ..., "params": [[name, value], ...]} on stdin and prints the
X-Twilio-Signature that twilio.request_validator.RequestValidator computes for it.
"""
import json
import sys

from twilio.request_validator import RequestValidator

request = json.load(sys.stdin)
params = {}
for name, value in request["params"]:
    params.setdefault(name, []).append(value)
# One value per name as a plain string (Twilio's webhooks have no repeated names).
params = {name: values[0] if len(values) == 1 else values for name, values in params.items()}
print(RequestValidator(request["token"]).compute_signature(request["url"], params))
