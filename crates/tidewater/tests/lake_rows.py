"""Prints every row of a Tidewater lake as canonical JSON lines, sorted.

Usage: python lake_rows.py LAKE_DIR [--no-leftovers]

Each line is one row with its table (`_table`, the topic folder) and its date partition
(`_date`). Opening every file with pyarrow is part of the check: a file pyarrow cannot
read makes this script fail. With --no-leftovers, so does any file that is not a
finished Parquet file (a temporary file a crash left and no restart has cleaned up yet).
"""
import datetime
import json
import pathlib
import sys

import pyarrow.parquet as pq


def plain(value):
    if isinstance(value, datetime.datetime):
        return int(value.timestamp() * 1000)
    if isinstance(value, float) and value != value:
        return "NaN"
    return value


def main():
    lake = pathlib.Path(sys.argv[1])
    rows = []
    for path in sorted(lake.rglob("*.parquet")):
        table = pq.read_table(path)
        date = path.parent.name.removeprefix("date=")
        topic = path.parent.parent.name
        for row in table.to_pylist():
            row = {k: plain(v) for k, v in row.items()}
            row["_table"] = topic
            row["_date"] = date
            rows.append(json.dumps(row, sort_keys=True, default=str))
    leftovers = [p for p in lake.rglob("*") if p.is_file() and not p.name.endswith(".parquet")]
    if leftovers and "--no-leftovers" in sys.argv[2:]:
        sys.exit(f"files that are not Parquet in the lake: {leftovers}")
    for line in sorted(rows):
        print(line)


if __name__ == "__main__":
    main()
