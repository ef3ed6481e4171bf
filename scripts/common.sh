# Shared settings of the project's scripts (sourced, not run).
# Builds go to a cache outside the clone, so fresh clones (CI) reuse earlier builds.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tidewater-target}"
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
shared_data="${TIDEWATER_SHARED_DATA:-$repo_root/../shared/data}"
