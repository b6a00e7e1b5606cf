# A real SMTP server for autobot's notification tests and bench (aiosmtpd):
# stores each message it accepts as DIR/N.eml and, parsed by Python's email
# package, DIR/N.json; prints READY once it listens. Optional STARTTLS or
# implicit TLS (--cert/--key) and AUTH (--auth USER:PASSWORD).
import argparse, email, email.policy, json, os, ssl, sys, time
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

p = argparse.ArgumentParser()
p.add_argument("--dir", required=True)
p.add_argument("--port", type=int, required=True)
p.add_argument("--cert")
p.add_argument("--key")
p.add_argument("--mode", default="plain", choices=["plain", "starttls", "implicit"])
p.add_argument("--auth")
a = p.parse_args()

count = [0]

class Handler:
    async def handle_DATA(self, server, session, envelope):
        n = count[0]
        count[0] += 1
        data = envelope.original_content or envelope.content
        with open(os.path.join(a.dir, "%d.eml" % n), "wb") as f:
            f.write(data)
        msg = email.message_from_bytes(data, policy=email.policy.default)
        auth = None
        if getattr(session, "auth_data", None) is not None and isinstance(session.auth_data, LoginPassword):
            auth = session.auth_data.login.decode()
        out = {
            "accepted_at": time.time(),
            "envelope_from": envelope.mail_from,
            "envelope_to": envelope.rcpt_tos,
            "tls": bool(session.ssl) or a.mode == "implicit",
            "auth": auth,
            "headers": {k.lower(): str(v) for k, v in msg.items()},
            "header_count": {k.lower(): len(msg.get_all(k)) for k in msg.keys()},
            "to": [x.addr_spec for x in msg["To"].addresses] if msg["To"] else [],
            "content_type": msg.get_content_type(),
            "charset": msg.get_content_charset(),
            "body": msg.get_content(),
        }
        tmp = os.path.join(a.dir, ".%d.tmp" % n)
        with open(tmp, "w") as f:
            json.dump(out, f)
        os.rename(tmp, os.path.join(a.dir, "%d.json" % n))
        return "250 OK stored as %d" % n

kw = {}
if a.auth:
    user, pw = a.auth.split(":", 1)
    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and auth_data.login.decode() == user and auth_data.password.decode() == pw
        return AuthResult(success=ok, handled=False, auth_data=auth_data)
    kw.update(authenticator=authenticator, auth_required=True, auth_require_tls=(a.mode == "starttls"))
ctx = None
if a.cert:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(a.cert, a.key)
if a.mode == "starttls":
    kw.update(tls_context=ctx, require_starttls=True)
ctl = Controller(Handler(), hostname="127.0.0.1", port=a.port,
                 ssl_context=ctx if a.mode == "implicit" else None, **kw)
ctl.start()
print("READY", flush=True)
while True:
    time.sleep(3600)
