#!/usr/bin/env python3
"""Verifies Standard Webhooks signatures independently of the relay.

Reads JSON from stdin: {"secret": "whsec_...", "now": <unix seconds>,
"tolerance": <seconds>, "deliveries": [{"headers": {name: value},
"body": <base64 of the raw body>}, ...]} and prints one line per delivery:
"ok" or "bad: <why>". Uses only hmac, hashlib and base64, over the signed
content the specification defines: "{webhook-id}.{webhook-timestamp}.{body}".
"""
import base64
import hashlib
import hmac
import json
import sys


def verify(key, now, tolerance, headers, body):
    h = {k.lower(): v for k, v in headers.items()}
    msg_id = h.get("webhook-id")
    ts = h.get("webhook-timestamp")
    sigs = h.get("webhook-signature")
    if not msg_id or not ts or not sigs:
        return "bad: missing webhook-id, webhook-timestamp or webhook-signature"
    try:
        ts_int = int(ts)
    except ValueError:
        return "bad: webhook-timestamp is not an integer"
    if abs(now - ts_int) > tolerance:
        return "bad: timestamp outside the tolerance"
    signed = msg_id.encode() + b"." + ts.encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())
    for sig in sigs.split(" "):
        version, _, value = sig.partition(",")
        if version == "v1" and hmac.compare_digest(value.encode(), expected):
            return "ok"
    return "bad: no matching v1 signature"


def main():
    req = json.load(sys.stdin)
    secret = req["secret"]
    if not secret.startswith("whsec_"):
        print("bad: secret without whsec_ prefix")
        return
    key = base64.b64decode(secret[len("whsec_"):])
    for d in req["deliveries"]:
        print(verify(key, req["now"], req["tolerance"], d["headers"], base64.b64decode(d["body"])))


main()
