#!/usr/bin/env python3
"""An HTTPS front for the real scim2-server that injects the faults a SaaS SCIM endpoint shows.

Requests pass through to the upstream server unchanged, except in tenants whose name holds
one of these words (the first path segment, `/<tenant>/v2/...`):

- ``throttle``: every fourth request answers 429 with ``Retry-After: 1``.
- ``flaky``: every other request answers 503 with an HTML body; for a POST (which gatehouse
  sends again only when the server says it may) the 503 carries ``Retry-After: 1``.
- ``down``: every request answers 502 with an HTML body.
- ``garbage``: GET of /Groups answers 200 with truncated JSON.
- ``slow``: every request waits 3 s before it is passed on.
- ``lost``: every POST is passed on (and carried out), but answered 502: the answer is lost.
- ``nofilterpath``: a PATCH whose body has a value-filter path (``members[value eq "…"]``)
  answers 501 with django-scim2's body, as RFC 7644 §3.12 allows a server to; the rest
  passes. (scim2-server then refuses removal by value itself, 400 ``invalidValue``.)

- ``nobulk``: POST /Bulk answers 501 though the configuration announces Bulk.
- ``novalueremove``: a PATCH removing members by value (path ``members`` with a value)
  answers 501, so a server whose PUT ignores ``members`` (django-scim2) is left with no
  way to remove a member.
- ``nogrouppatch``: any PATCH of a group answers 405 (groups change only by PUT there);
  PATCH of users passes.
- ``nouserpatch``: any PATCH of a user answers 405 (users change only by PUT there).
- ``noemailpath``: a PATCH whose body has the filtered path ``emails[type eq "work"]...``
  answers 400 ``invalidPath``; other PATCHes pass.

Words given as FAULTS apply to every request, whatever the path (for an upstream without
tenants, such as django-scim2 at ``/scim/v2``).

It makes its own CA and a server certificate for 127.0.0.1 with openssl, serves HTTPS on a
free loopback port, and prints ``PORT=`` and ``CA=`` (the CA's PEM file) once ready.
Usage: fault_proxy.py DIR UPSTREAM_BASE_URL [FAULTS]
"""

import http.client
import json
import http.server
import os
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse

DIR, UPSTREAM = sys.argv[1], sys.argv[2]
FAULTS = sys.argv[3] if len(sys.argv) > 3 else ""
UP = urllib.parse.urlsplit(UPSTREAM)
COUNTS = {}
LOCK = threading.Lock()


def certificates():
    def run(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    ca_key, ca = os.path.join(DIR, "ca.key"), os.path.join(DIR, "ca.crt")
    key, csr, crt = (os.path.join(DIR, n) for n in ("server.key", "server.csr", "server.crt"))
    ext = os.path.join(DIR, "server.ext")
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca,
        "-days", "2", "-subj", "/CN=gatehouse test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1")
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
                "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")
    run("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", crt,
        "-days", "2", "-extfile", ext)
    return ca, crt, key


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("%s\n" % (fmt % args))

    def answer(self, status, body, content_type="text/html", headers=()):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def relay(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        tenant = self.path.lstrip("/").split("/", 1)[0]
        words = tenant + " " + FAULTS
        with LOCK:
            n = COUNTS.get(tenant, 0)
            COUNTS[tenant] = n + 1
        if "throttle" in words and n % 4 == 0:
            return self.answer(429, '{"status": "429", "detail": "slow down"}',
                               "application/scim+json", [("Retry-After", "1")])
        if "flaky" in words and n % 2 == 0:
            headers = [("Retry-After", "1")] if self.command == "POST" else []
            return self.answer(503, "<html><body>maintenance</body></html>", headers=headers)
        if "down" in words:
            return self.answer(502, "<html><body>bad gateway</body></html>")
        resource = self.path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        if "garbage" in words and self.command == "GET" and resource == "Groups":
            return self.answer(200, '{"schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"], "Resources": [',
                               "application/scim+json")
        if "nofilterpath" in words and self.command == "PATCH" and body and b"[value eq" in body:
            return self.answer(501, '{"detail": "", "status": 501}', "application/scim+json")
        if "nobulk" in words and self.command == "POST" and resource == "Bulk":
            return self.answer(501, '{"detail": "bulk is not implemented", "status": "501"}',
                               "application/scim+json")
        if "nogrouppatch" in words and self.command == "PATCH" and "/Groups/" in self.path:
            return self.answer(405, '{"detail": "PATCH is not allowed on groups", "status": "405"}',
                               "application/scim+json")
        if "nouserpatch" in words and self.command == "PATCH" and "/Users/" in self.path:
            return self.answer(405, '{"detail": "PATCH is not allowed on users", "status": "405"}',
                               "application/scim+json")
        if "noemailpath" in words and self.command == "PATCH" and body and b'emails[type eq' in body:
            return self.answer(400, '{"scimType": "invalidPath", "detail": "filtered paths are not supported", "status": "400"}',
                               "application/scim+json")
        if "novalueremove" in words and self.command == "PATCH" and removes_by_value(body):
            return self.answer(501, '{"detail": "", "status": 501}', "application/scim+json")
        if "slow" in words:
            time.sleep(3)
        conn = http.client.HTTPConnection(UP.hostname, UP.port, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        conn.request(self.command, self.path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        if "lost" in words and self.command == "POST":
            conn.close()
            return self.answer(502, "<html><body>bad gateway</body></html>")
        self.send_response(response.status)
        for k, v in response.getheaders():
            if k.lower() not in ("connection", "transfer-encoding", "content-length", "server", "date"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        conn.close()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = relay


def removes_by_value(body):
    try:
        ops = json.loads(body or b"{}").get("Operations") or []
    except ValueError:
        return False
    return any(str(op.get("op", "")).lower() == "remove"
               and str(op.get("path", "")).lower() == "members"
               and op.get("value") is not None for op in ops)


def main():
    ca, crt, key = certificates()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(crt, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    print(f"PORT={server.server_address[1]}", flush=True)
    print(f"CA={ca}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
