"""An SMTP server for tests/it/providers/smtp.rs: aiosmtpd with STARTTLS (required) and AUTH PLAIN/LOGIN.

Usage: smtp_server.py CERT KEY USER PASSWORD [--defer N]

Listens on a free port of 127.0.0.1 and reports on stdout, one JSON object a line:
  {"ready": PORT}                       once it listens;
  {"auth": MECHANISM, "ok": BOOL}       for each login attempt;
  {"deferred": ADDRESS}                 for each recipient refused with 451 (see --defer);
  {"mail_from", "rcpt_tos", "tls", "login", "headers", "body"} for each message taken.

--defer N: a recipient whose local part starts with "defer" is refused with "451 4.3.0"
its first N times (a greylisting relay), then taken.
"""

import argparse
import asyncio
import email
import email.policy
import json
import ssl
import sys
from collections import Counter

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


def emit(event):
    print(json.dumps(event), flush=True)


class Handler:
    def __init__(self, defer):
        self.defer = defer
        self.deferred = Counter()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("defer") and self.deferred[address] < self.defer:
            self.deferred[address] += 1
            emit({"deferred": address})
            return "451 4.3.0 Try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        login = session.auth_data.login.decode() if session.auth_data else None
        emit(
            {
                "mail_from": envelope.mail_from,
                "rcpt_tos": envelope.rcpt_tos,
                "tls": session.ssl is not None,
                "login": login,
                "headers": {name: str(value) for name, value in message.items()},
                "body": message.get_content(),
            }
        )
        return "250 OK"


def authenticator(user, password):
    def check(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == user
            and auth_data.password.decode() == password
        )
        emit({"auth": mechanism, "ok": ok})
        # handled=False: aiosmtpd answers a failure with its 535 itself.
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    return check


async def main():
    parser = argparse.ArgumentParser()
    for name in ("cert", "key", "user", "password"):
        parser.add_argument(name)
    parser.add_argument("--defer", type=int, default=0)
    args = parser.parse_args()

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.cert, args.key)
    handler = Handler(args.defer)
    loop = asyncio.get_running_loop()

    def session():
        return SMTP(
            handler,
            hostname="smtp.test",
            tls_context=context,
            require_starttls=True,
            auth_required=True,
            auth_require_tls=True,
            authenticator=authenticator(args.user, args.password),
            loop=loop,
        )

    server = await loop.create_server(session, "127.0.0.1", 0)
    emit({"ready": server.sockets[0].getsockname()[1]})
    await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
