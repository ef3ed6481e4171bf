#!/usr/bin/env python3
"""Prints one merged profile and checks its booking aggregates against SQL.

    python3 examples/travel/show_profile.py --api http://127.0.0.1:8081 \
        --dsn "host=127.0.0.1 port=55432 user=postgres dbname=travel" email:ana.lima@example.com

Waits (up to --timeout seconds) until the profile exists and its bookings count, total
and largest booking equal what SQL computes from the bookings table for the profile's
email identifiers (Tidewater applies changes within moments of their commit), then
prints the profile as JSON. Python 3 standard library only; SQL goes through `psql`.
"""

import argparse
import json
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request


def fetch(api, identifier):
    url = f"{api}/v1/profiles/{urllib.parse.quote(identifier, safe=':@+')}"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        raise


def expected(dsn, profile):
    """count, sum and max of amount over the bookings of the profile's emails, by SQL."""
    emails = [i.split(":", 1)[1] for i in profile.get("identifiers", []) if i.startswith("email:")]
    if not emails:
        return {"bookings": 0, "booked_total": 0, "largest_booking": None}
    array = "ARRAY[" + ",".join("'" + e.replace("'", "''") + "'" for e in emails) + "]"
    sql = (
        "SELECT json_build_object('bookings', count(*), 'booked_total', coalesce(sum(amount), 0), "
        "'largest_booking', max(amount)) FROM bookings.bookings "
        f"WHERE lower(trim(customer_email)) = ANY({array})"
    )
    out = subprocess.run(
        ["psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-c", sql, dsn],
        check=True, capture_output=True, text=True,
    ).stdout
    return json.loads(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("identifier", help="namespace:value, e.g. email:ana.lima@example.com")
    ap.add_argument("--api", default="http://127.0.0.1:8081")
    ap.add_argument("--dsn", default="host=127.0.0.1 port=55432 user=postgres dbname=travel")
    ap.add_argument("--timeout", type=float, default=60)
    args = ap.parse_args()

    deadline = time.monotonic() + args.timeout
    profile, want = None, None
    while True:
        profile = fetch(args.api, args.identifier)
        if profile is not None:
            want = expected(args.dsn, profile)
            got = {k: profile.get("aggregates", {}).get(k) for k in want}
            if got == want:
                break
        if time.monotonic() > deadline:
            print(json.dumps(profile, indent=2))
            sys.exit(f"after {args.timeout:g}s the profile's aggregates {got if profile else None} "
                     f"still differ from SQL's {want}")
        time.sleep(0.2)
    print(json.dumps(profile, indent=2))
    a = profile["attributes"]
    print(
        f"--> {a.get('name')} ({a.get('city')}), tier {a.get('tier')}, {a.get('points')} points: "
        f"{len(profile['records'])} linked records, {want['bookings']} bookings totalling "
        f"{want['booked_total']} (largest {want['largest_booking']}) -- matches SQL"
    )


if __name__ == "__main__":
    main()
