#!/usr/bin/env bash
# Fetches a text corpus for `tidewater bench ingest`.
#
#   scripts/fetch-corpus.sh gcide
#
# gcide: the GNU Collaborative International Dictionary of English (Webster's 1913 and
#        WordNet glosses, ~40 MB of English text, ~249,000 entries), from Debian's package
#        `dict-gcide`. The package is downloaded with apt (not installed: no dictionary
#        server is needed) and its dictzip file unpacked to plain text.
#
# Writes $XDG_CACHE_HOME/tidewater/corpora/NAME.txt (else $HOME/.cache/…), where the
# benchmark looks by default, and prints that path. Idempotent.
set -euo pipefail

if [[ $# -ne 1 || "$1" != gcide ]]; then
    echo "usage: $0 gcide" >&2
    exit 2
fi
dir="${XDG_CACHE_HOME:-$HOME/.cache}/tidewater/corpora"
target="$dir/gcide.txt"
if [[ -s "$target" ]]; then
    echo "$target"
    exit 0
fi
mkdir -p "$dir"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"  # apt downloads as its own user
cd "$work"
if ! apt-get download dict-gcide >&2; then
    echo "==> apt-get download failed; updating the package lists and trying again" >&2
    apt-get update >&2
    apt-get download dict-gcide >&2
fi
dpkg-deb -x dict-gcide_*.deb root
# dictzip is gzip with an index in an extra field: gzip reads it as it is.
gzip -dc root/usr/share/dictd/gcide.dict.dz > "$target.partial"
mv "$target.partial" "$target"
echo "==> $(wc -c < "$target") bytes of GCIDE text in $target" >&2
echo "$target"
