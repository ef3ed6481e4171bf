#!/usr/bin/env python3
"""Writes each paragraph of a SQuAD-format JSON file as one text file: OUT/<article>/<nnn>.txt.

Usage: scripts/squad-to-files.py SQUAD.json OUT_DIR
"""
import json
import pathlib
import re
import sys


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    source, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    data = json.loads(source.read_text(encoding="utf-8"))["data"]
    written = 0
    for article in data:
        folder = out / re.sub(r"[^A-Za-z0-9_.-]", "_", article["title"])
        folder.mkdir(parents=True, exist_ok=True)
        for i, paragraph in enumerate(article["paragraphs"]):
            path = folder / f"{i:03}.txt"
            text = paragraph["context"].strip() + "\n"
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                path.write_text(text, encoding="utf-8")
            written += 1
    print(f"{written} paragraphs under {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
