#!/usr/bin/env python3
"""A stub billing exporter for tests/billing/fetcher.sh (Python 3 standard library).

    stub_exporter.py generate --out STREAM.json [--accounts 3] [--count 50] [--step 10]
                              [--start-ago 2100] [--reset 1:30] [--future 2] [--seed 1]
    stub_exporter.py serve --snapshots STREAM.json --port-file F --pid-file F
                           [--port 0] [--fault-file F] [--log F]

generate writes a deterministic stream of snapshots (a JSON array) of node n1 / env prod:
--count snapshots --step seconds apart, the first --start-ago seconds before now (whole
seconds, UTC), each with one growing cumulative counter per account; --reset ACCOUNT:INDEX
drops that account's counter to a small value at that snapshot; --future more snapshots lie
in the future (no window may reach them); one sample has an account id that is not a UUID.

serve answers GET /v1/snapshots?since=&until=&limit=&cursor= with the page
{"since", "until" (as asked), "snapshots", "has_more", "next_cursor"}: the snapshots with
sampled_at in (max(since, cursor), until], ordered by sampled_at, at most limit of them
(a page never splits snapshots of one instant, since the cursor is a time); next_cursor is the
sampled_at of the last one returned ("" when none). Port 0 picks a free port; the port and
pid are written to --port-file / --pid-file once it listens.

Faults: when --fault-file exists, the next request reads and deletes it and answers by its
content: "bad_cursor" (the right snapshots, but has_more true with next_cursor ""),
"future_cursor" (has_more with a next_cursor in 2999), "bad_snapshot" (one snapshot whose
sampled_at is not a time), "http500" (HTTP 500), "hang" (sleeps 5 s before answering).
"""
import argparse
import json
import os
import random
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


def rfc3339(t):
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(s):
    t = datetime.fromisoformat(s.replace("Z", "+00:00"))
    if t.tzinfo is None:
        raise ValueError(f"{s!r} has no time zone")
    return t


def generate(a):
    rng = random.Random(a.seed)
    accounts = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"opsmeter-fetch-test/{i}"))
                for i in range(a.accounts)]
    reset_acc, reset_at = (int(x) for x in a.reset.split(":")) if a.reset else (-1, -1)
    start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(seconds=a.start_ago)
    future = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(minutes=10)
    value = [0] * a.accounts
    snaps = []
    for i in range(a.count + a.future):
        at = start + timedelta(seconds=i * a.step) if i < a.count else future + timedelta(seconds=i)
        samples = []
        for j, acc in enumerate(accounts):
            if j == reset_acc and i == reset_at:
                value[j] = rng.randint(0, 100)
            else:
                value[j] += rng.choice([0, rng.randint(1, 5000), rng.randint(1, 5000)])
            samples.append({"account_id": acc, "cumulative_bytes": value[j]})
        if i == 3:
            samples.append({"account_id": "not-a-uuid", "cumulative_bytes": 7})
        snaps.append({"node_id": "n1", "env": "prod", "sampled_at": rfc3339(at),
                      "samples": samples})
    with open(a.out, "w") as f:
        json.dump(snaps, f, indent=1)


def page_of(snaps, since, until, limit, cursor):
    lower = max(since, cursor) if cursor else since
    inside = [s for s in snaps if lower < s["_at"] <= until]
    n = min(limit, len(inside))
    while 0 < n < len(inside) and inside[n]["_at"] == inside[n - 1]["_at"]:
        n += 1  # keep one instant's snapshots together
    out = [{k: v for k, v in s.items() if k != "_at"} for s in inside[:n]]
    return {"snapshots": out, "has_more": n < len(inside),
            "next_cursor": out[-1]["sampled_at"] if out else ""}


def serve(a):
    with open(a.snapshots) as f:
        snaps = json.load(f)
    for s in snaps:
        s["_at"] = parse_time(s["sampled_at"])
    snaps.sort(key=lambda s: s["_at"])

    class Handler(BaseHTTPRequestHandler):
        def reply(self, code, obj):
            body = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if a.log:
                with open(a.log, "a") as f:
                    f.write(self.path + "\n")
            url = urlparse(self.path)
            if url.path != "/v1/snapshots":
                return self.reply(404, {"error": f"no such path {url.path}"})
            fault = ""
            if a.fault_file and os.path.exists(a.fault_file):
                with open(a.fault_file) as f:
                    fault = f.read().strip()
                os.unlink(a.fault_file)
            if fault == "http500":
                return self.reply(500, {"error": "injected fault"})
            if fault == "hang":
                time.sleep(5)
            q = {k: v[0] for k, v in parse_qs(url.query).items()}
            try:
                since, until = parse_time(q["since"]), parse_time(q["until"])
                cursor = parse_time(q["cursor"]) if q.get("cursor") else None
                limit = int(q.get("limit", "100"))
            except (KeyError, ValueError) as e:
                return self.reply(400, {"error": f"bad query: {e}"})
            page = {"since": q["since"], "until": q["until"],
                    **page_of(snaps, since, until, limit, cursor)}
            if fault == "bad_cursor":
                page.update(has_more=True, next_cursor="")
            elif fault == "future_cursor":
                page.update(has_more=True, next_cursor="2999-01-01T00:00:00Z")
            elif fault == "bad_snapshot":
                page["snapshots"] = [{"node_id": "n1", "env": "prod", "sampled_at": "yesterday",
                                      "samples": []}]
            self.reply(200, page)

        def log_message(self, fmt, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    for path, value in ((a.port_file, server.server_address[1]), (a.pid_file, os.getpid())):
        with open(path + ".tmp", "w") as f:
            f.write(f"{value}\n")
        os.replace(path + ".tmp", path)
    server.serve_forever()


def main():
    p = argparse.ArgumentParser(description="stub billing exporter")
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate")
    g.add_argument("--out", required=True)
    g.add_argument("--accounts", type=int, default=3)
    g.add_argument("--count", type=int, default=50)
    g.add_argument("--step", type=int, default=10)
    g.add_argument("--start-ago", type=int, default=2100)
    g.add_argument("--reset", default="1:30", help="ACCOUNT:INDEX, or '' for none")
    g.add_argument("--future", type=int, default=2)
    g.add_argument("--seed", type=int, default=1)
    s = sub.add_parser("serve")
    s.add_argument("--snapshots", required=True)
    s.add_argument("--port", type=int, default=0)
    s.add_argument("--port-file", required=True)
    s.add_argument("--pid-file", required=True)
    s.add_argument("--fault-file")
    s.add_argument("--log")
    a = p.parse_args()
    generate(a) if a.cmd == "generate" else serve(a)


if __name__ == "__main__":
    sys.exit(main())
