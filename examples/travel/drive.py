#!/usr/bin/env python3
"""Drives a stream of random changes into the travel database.

    python3 examples/travel/drive.py --dsn "host=127.0.0.1 port=55432 user=postgres dbname=travel" \
        --rate 50 --seconds 60 [--focus ana.lima@example.com] [--seed 7]

Each change is one committed statement, sent through a single `psql` process (Python 3
standard library only). The mix: new, cancelled (deleted) and amended bookings; CRM city
and email changes and new customers; new loyalty members who match an existing CRM
customer by email (written differently) or only by phone; points and tier changes;
closed loyalty accounts. Rows are picked at random by the database (`ORDER BY random()`).

With --focus EMAIL, about one change in fifty concerns that customer (a booking, a
cancellation, a move, points), so a profile being watched visibly moves; the focus
customer's CRM row is never deleted and its email never changed.
"""

import argparse
import random
import subprocess
import sys
import time

DESTINATIONS = [
    "Lisbon", "Tokyo", "Reykjavik", "Cape Town", "Lima", "Kyoto", "Marrakesh", "Barcelona",
    "Hanoi", "Vancouver", "Buenos Aires", "Queenstown", "Istanbul", "Cusco", "Bali",
    "Edinburgh", "Santorini", "Mexico City", "Seoul", "Nairobi", "Oslo", "Havana",
    "Dubrovnik", "Bangkok", "Honolulu",
]
CITIES = [
    ("San Francisco", "415"), ("New York", "212"), ("Chicago", "312"), ("Boston", "617"),
    ("Seattle", "206"), ("Miami", "305"), ("Austin", "512"), ("Denver", "303"),
    ("Atlanta", "404"), ("Los Angeles", "213"), ("Portland", "503"), ("Philadelphia", "215"),
]
FIRST = ["Iris", "Theo", "Anya", "Marco", "Selin", "Oscar", "Naomi", "Ravi", "Clara", "Idris"]
LAST = ["Fischer", "Alvarez", "Osei", "Lindqvist", "Mehta", "Park", "Moretti", "Byrne"]
TIERS = ["blue", "silver", "gold", "platinum"]


def q(value):
    """A SQL string literal."""
    return "'" + str(value).replace("'", "''") + "'"


class Changes:
    """The kinds of change, each returning one SQL statement."""

    def __init__(self, rng, focus):
        self.rng = rng
        self.focus = focus
        self.new_people = 0
        # Rows of the focus customer are left alone by the random (non-focus) changes.
        self.not_focus = "TRUE" if focus is None else f"lower(trim(email)) <> {q(focus)}"
        self.not_focus_booking = (
            "TRUE" if focus is None else f"lower(trim(customer_email)) <> {q(focus)}"
        )
        # Loyalty accounts of the focus customer: same email, or the CRM row's phone.
        self.not_focus_member = "TRUE" if focus is None else (
            f"coalesce(lower(trim(email)), '') <> {q(focus)} AND "
            "coalesce(right(regexp_replace(phone, '\\D', '', 'g'), 10), '') NOT IN ("
            "SELECT right(regexp_replace(phone, '\\D', '', 'g'), 10) FROM crm.customers "
            f"WHERE lower(trim(email)) = {q(focus)} AND phone IS NOT NULL)"
        )

    def amount(self):
        return self.rng.randrange(150, 3000, 5)

    # bookings ---------------------------------------------------------------------------
    def new_booking(self):
        # Any known email: a CRM customer's, or a loyalty member's as they typed it.
        table = self.rng.choice(["crm.customers", "crm.customers", "loyalty.members"])
        return (
            "INSERT INTO bookings.bookings (customer_email, destination, amount) "
            f"SELECT email, {q(self.rng.choice(DESTINATIONS))}, {self.amount()} FROM {table} "
            "WHERE email IS NOT NULL ORDER BY random() LIMIT 1"
        )

    def cancel_booking(self):
        return (
            "DELETE FROM bookings.bookings WHERE id = (SELECT id FROM bookings.bookings "
            f"WHERE {self.not_focus_booking} ORDER BY random() LIMIT 1)"
        )

    def amend_booking(self):
        return (
            f"UPDATE bookings.bookings SET amount = {self.amount()}, status = 'amended' "
            "WHERE id = (SELECT id FROM bookings.bookings "
            f"WHERE {self.not_focus_booking} ORDER BY random() LIMIT 1)"
        )

    # CRM --------------------------------------------------------------------------------
    def move_city(self):
        city, _ = self.rng.choice(CITIES)
        return (
            f"UPDATE crm.customers SET city = {q(city)}, updated_at = now() "
            "WHERE id = (SELECT id FROM crm.customers "
            f"WHERE {self.not_focus} ORDER BY random() LIMIT 1)"
        )

    def change_email(self):
        # A new address at another provider; bookings made under the old one stay there.
        domain = self.rng.choice(["example.com", "example.net", "example.org"])
        return (
            "UPDATE crm.customers SET email = "
            f"lower(replace(name, ' ', '_')) || '.' || id || '@' || {q(domain)}, "
            "updated_at = now() WHERE id = (SELECT id FROM crm.customers "
            f"WHERE email IS NOT NULL AND {self.not_focus} ORDER BY random() LIMIT 1)"
        )

    def new_customer(self):
        self.new_people += 1
        first, last = self.rng.choice(FIRST), self.rng.choice(LAST)
        city, area = self.rng.choice(CITIES)
        # 555-0150..0199: above the block the seed uses, so new customers link to no one.
        phone = f"({area}) 555-01{self.rng.randrange(50, 100)}"
        email = f"{first.lower()}.{last.lower()}.{int(time.time()) % 100000}{self.new_people}@example.com"
        return (
            "INSERT INTO crm.customers (name, email, phone, city) VALUES "
            f"({q(first + ' ' + last)}, {q(email)}, {q(phone)}, {q(city)})"
        )

    def delete_customer(self):
        return (
            "DELETE FROM crm.customers WHERE id = (SELECT id FROM crm.customers "
            f"WHERE {self.not_focus} ORDER BY random() LIMIT 1)"
        )

    # loyalty ----------------------------------------------------------------------------
    def join_by_email(self):
        # A CRM customer without a membership signs up, typing the email their own way.
        style = self.rng.choice(["upper(c.email)", "' ' || c.email || '  '", "initcap(c.email)"])
        return (
            "INSERT INTO loyalty.members (email, phone, tier, points) "
            f"SELECT {style}, NULL, 'blue', {self.rng.randrange(0, 2000)} FROM crm.customers c "
            "WHERE c.email IS NOT NULL AND NOT EXISTS (SELECT 1 FROM loyalty.members m "
            "WHERE lower(trim(m.email)) = lower(trim(c.email))) ORDER BY random() LIMIT 1"
        )

    def join_by_phone(self):
        # ... or with a personal email and their phone in international format.
        return (
            "INSERT INTO loyalty.members (email, phone, tier, points) "
            "SELECT lower(split_part(c.name, ' ', 1)) || '.' || c.id || '.'"
            f" || {self.rng.randrange(100, 999)} || '@example.net', "
            "'+1 ' || regexp_replace(c.phone, '\\D', '', 'g'), 'blue', 0 FROM crm.customers c "
            f"WHERE c.phone IS NOT NULL AND {self.not_focus.replace('email', 'c.email')} "
            "ORDER BY random() LIMIT 1"
        )

    def earn_points(self):
        return (
            f"UPDATE loyalty.members SET points = points + {self.rng.randrange(100, 5000)}, "
            "tier = CASE WHEN points > 60000 THEN 'platinum' WHEN points > 30000 THEN 'gold' "
            "WHEN points > 10000 THEN 'silver' ELSE tier END "
            "WHERE id = (SELECT id FROM loyalty.members "
            f"WHERE {self.not_focus_member} ORDER BY random() LIMIT 1)"
        )

    def close_membership(self):
        return (
            "DELETE FROM loyalty.members WHERE id = (SELECT id FROM loyalty.members "
            f"WHERE {self.not_focus_member} ORDER BY random() LIMIT 1)"
        )

    # the focus customer -----------------------------------------------------------------
    def focus_change(self):
        f = q(self.focus)
        kind = self.rng.choices(["booking", "cancel", "move", "points"], [5, 1, 1, 2])[0]
        if kind == "booking":
            sql = (
                "INSERT INTO bookings.bookings (customer_email, destination, amount) VALUES "
                f"({f}, {q(self.rng.choice(DESTINATIONS))}, {self.amount()})"
            )
        elif kind == "cancel":
            sql = (
                "DELETE FROM bookings.bookings WHERE id = (SELECT max(id) FROM "
                f"bookings.bookings WHERE lower(trim(customer_email)) = {f})"
            )
        elif kind == "move":
            city, _ = self.rng.choice(CITIES)
            sql = (
                f"UPDATE crm.customers SET city = {q(city)}, updated_at = now() "
                f"WHERE lower(trim(email)) = {f}"
            )
        else:
            sql = (
                f"UPDATE loyalty.members SET points = points + {self.rng.randrange(100, 3000)} "
                f"WHERE lower(trim(email)) = {f}"
            )
        return "focus " + kind, sql


# (kind, weight): about 60 % bookings, 20 % CRM, 20 % loyalty.
MIX = [
    ("new booking", 34), ("cancel booking", 12), ("amend booking", 10),
    ("move city", 10), ("change email", 5), ("new customer", 4), ("delete customer", 1),
    ("join by email", 6), ("join by phone", 3), ("earn points", 13), ("close membership", 2),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dsn", default="host=127.0.0.1 port=55432 user=postgres dbname=travel")
    ap.add_argument("--rate", type=float, default=50, help="changes per second")
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--focus", help="an email whose customer gets about 2%% of the changes")
    ap.add_argument("--seed", type=int, help="random seed (changes picked by Python)")
    args = ap.parse_args()

    rng = random.Random(args.seed)
    changes = Changes(rng, args.focus.strip().lower() if args.focus else None)
    kinds, weights = zip(*MIX)
    psql = subprocess.Popen(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-o", "/dev/null", args.dsn],
        stdin=subprocess.PIPE, text=True,
    )
    counts = {}
    start = time.monotonic()
    total = int(args.rate * args.seconds)
    next_report = start + 5
    print(f"driving {total} changes at {args.rate:g}/s for {args.seconds:g}s", flush=True)
    try:
        for n in range(total):
            due = start + n / args.rate
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            if changes.focus and rng.random() < 0.02:
                kind, sql = changes.focus_change()
            else:
                kind = rng.choices(kinds, weights)[0]
                sql = getattr(changes, kind.replace(" ", "_"))()
            psql.stdin.write(sql + ";\n")
            psql.stdin.flush()
            counts[kind] = counts.get(kind, 0) + 1
            if psql.poll() is not None:
                sys.exit(f"psql exited ({psql.returncode}) after: {sql}")
            if time.monotonic() >= next_report:
                elapsed = time.monotonic() - start
                print(f"  {elapsed:5.1f}s  {n + 1:6d} changes sent", flush=True)
                next_report += 5
        psql.stdin.close()
        if psql.wait() != 0:
            sys.exit(f"psql failed ({psql.returncode})")
    except BrokenPipeError:
        sys.exit(f"psql exited ({psql.wait()})")
    elapsed = time.monotonic() - start
    print(f"done: {total} changes committed in {elapsed:.1f}s ({total / elapsed:.0f}/s)")
    for kind, count in sorted(counts.items(), key=lambda kv: -kv[1]):
        print(f"  {count:6d}  {kind}")


if __name__ == "__main__":
    main()
