#!/usr/bin/env python3
"""Reference billing fetcher for opsmeter (0.6.0): collects one source's snapshots.

    billing-fetch.py --source exporter-eu --exporter-url http://exporter:9100 \\
        --dsn "host=/var/run/postgresql dbname=app" [--limit 500] [--max-pages 100] [--once]

For the source it repeats: read the window to collect, billing_window(source) -> (since,
until); fetch GET <exporter-url>/v1/snapshots?since=..&until=..&limit=..[&cursor=..] (the
exporter answers with a page {"since", "until", "snapshots", "has_more", "next_cursor"});
hand the page body, unchanged, to billing_advance_window(source, page), which bills it and
moves the source's last_completed_until; print the result as one JSON line; follow has_more.
A window with since > until is closed with an empty page, as the seed does.

Nothing is kept outside the database, so the script can simply run from cron every minute:

    * * * * * postgres /usr/local/bin/billing-fetch.py --source exporter-eu \\
        --exporter-url http://exporter:9100 --dsn "dbname=app" >>/var/log/billing-fetch.log 2>&1

Running it twice, or over the same window again, is harmless: samples already counted are
replays and change nothing. The connection comes from --dsn (a libpq conninfo string or URI,
given to psql as its dbname) or the usual PG* environment variables.

Exit codes: 0 done; 1 a database or usage error, psql's message shown (this includes a page
that billing_advance_window rejects as malformed: an ERROR, so billing_status() does not show
it); 2 a page was the source's failure (recorded: see billing_status()); 3 the exporter failed
(HTTP error, timeout, not JSON, a page reaching past the window asked for): nothing was moved,
the next run retries.

Python 3 standard library only; it talks to PostgreSQL by running psql.
"""
import argparse
import json
import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime

WINDOW_SQL = """
SELECT json_build_object(
         'since', to_char(since AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
         'until', to_char(until AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
         'empty', since > until)
  FROM billing_window(:'source');
"""

# The page travels on psql's stdin as COPY data (any size, never part of the SQL text).
ADVANCE_SQL = """
CREATE TEMP TABLE billing_fetch_page (body text);
COPY billing_fetch_page FROM STDIN;
{data}
\\.
SELECT billing_advance_window(:'source', body::jsonb) FROM billing_fetch_page;
"""


def fail(code, message):
    print(f"billing-fetch: {message}", file=sys.stderr)
    sys.exit(code)


def psql(args, script):
    """Runs a psql script with :'source' set and returns its output (-At: bare values)."""
    cmd = [args.psql, "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-v", f"source={args.source}"]
    if args.dsn:
        cmd += ["-d", args.dsn]
    env = dict(os.environ, PGCLIENTENCODING="UTF8")
    try:
        r = subprocess.run(cmd + ["-f", "-"], input=script, capture_output=True,
                           encoding="utf-8", env=env)
    except OSError as e:
        fail(1, f"cannot run {args.psql}: {e}")
    if r.returncode != 0:
        fail(1, f"psql failed: {r.stderr.strip()}")
    return r.stdout.strip()


def copy_text(s):
    """s as one line of COPY text format."""
    return (s.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
             .replace("\t", "\\t"))


def advance(args, body):
    """billing_advance_window(source, body) -> the result, printed as one line."""
    out = psql(args, ADVANCE_SQL.format(data=copy_text(body)))
    print(out, flush=True)
    return json.loads(out)


def fetch(args, since, until, cursor):
    """One page from the exporter: (body text, parsed page). Exits 3 on any failure."""
    query = {"since": since, "until": until, "limit": args.limit}
    if cursor:
        query["cursor"] = cursor
    url = f"{args.exporter_url.rstrip('/')}/v1/snapshots?{urllib.parse.urlencode(query)}"
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as resp:
            body = resp.read().decode("utf-8")
    except urllib.error.HTTPError as e:
        fail(3, f"exporter answered HTTP {e.code} {e.reason} for {url}; nothing was moved")
    except (urllib.error.URLError, OSError, UnicodeDecodeError) as e:
        fail(3, f"exporter request {url} failed: {getattr(e, 'reason', e)}; nothing was moved")
    try:
        page = json.loads(body)
        if not isinstance(page, dict):
            raise ValueError("not a JSON object")
    except ValueError as e:
        fail(3, f"exporter page from {url} is not a JSON object ({e}); nothing was moved")
    return body, page


def parse_time(s):
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def out_of_window(page, since, until):
    """Why the page reaches outside the window asked for, or None. billing_advance_window
    itself refuses pages that end in the future, leave a gap after last_completed_until, have a
    cursor outside (since, until] or snapshots after until; this stricter check holds the
    exporter to the exact window this run asked for."""
    try:
        if parse_time(page["since"]) > parse_time(since):
            return f"page.since {page['since']} is after the requested since {since}"
        if parse_time(page["until"]) > parse_time(until):
            return f"page.until {page['until']} is after the requested until {until}"
        if page.get("has_more") and parse_time(page["next_cursor"]) > parse_time(until):
            return f"page.next_cursor {page['next_cursor']} is after the requested until {until}"
    except (KeyError, TypeError, ValueError, AttributeError):
        pass  # a malformed page: billing_advance_window names what is wrong
    return None


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--source", required=True, help="source id (billing_source_upsert)")
    p.add_argument("--exporter-url", required=True, help="e.g. http://exporter:9100")
    p.add_argument("--dsn", help="libpq conninfo for psql (default: PG* variables)")
    p.add_argument("--psql", default="psql", help="psql executable (default: psql)")
    p.add_argument("--limit", type=int, default=500, help="snapshots per page (default 500)")
    p.add_argument("--max-pages", type=int, default=100,
                   help="stop after this many pages; the next run continues (default 100)")
    p.add_argument("--once", action="store_true", help="one page only")
    p.add_argument("--timeout", type=float, default=30, help="HTTP timeout, seconds")
    args = p.parse_args()
    if args.limit < 1 or args.max_pages < 1:
        fail(1, "--limit and --max-pages must be >= 1")

    cursor = None
    for _ in range(1 if args.once else args.max_pages):
        window = json.loads(psql(args, WINDOW_SQL))
        if window["empty"]:
            # nothing to collect (the seed's rule): close the window with an empty page
            empty = {"since": window["since"], "until": window["until"],
                     "snapshots": [], "has_more": False}
            result = advance(args, json.dumps(empty))
            sys.exit(2 if result["status"] == "error" else 0)
        try:
            if cursor and parse_time(cursor) != parse_time(window["since"]):
                cursor = None  # another run moved the window: start from where it is now
        except ValueError:
            pass  # a cursor Python cannot read: pass it on as it is
        body, page = fetch(args, window["since"], window["until"], cursor)
        why = out_of_window(page, window["since"], window["until"])
        if why:
            fail(3, f"exporter page refused: {why}; nothing was moved")
        result = advance(args, body)
        if result["status"] == "error":
            fail(2, f"source {args.source} failed: {'; '.join(result['errors'][:3])} "
                    "(recorded: see billing_status())")
        if not page.get("has_more"):
            return
        cursor = page.get("next_cursor")
    if not args.once:
        print(f"billing-fetch: stopped after {args.max_pages} pages; the next run continues",
              file=sys.stderr)


if __name__ == "__main__":
    main()
