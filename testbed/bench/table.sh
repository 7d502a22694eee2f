#!/usr/bin/env bash
# The full-table benchmark side by side with BIRD 2 (docs/performance.md):
#   testbed/bench/table.sh [SIZES]      e.g. testbed/bench/table.sh 1000,10000,100000
# Installs BIRD 2 (the Debian package bird2) where it is missing and apt-get is there
# and usable; otherwise the BIRD side is skipped with a message and Trellis is measured
# alone. Extra arguments go to `trellis-testbed bench table` (`--json` for JSON).
set -euo pipefail
cd "$(dirname "$0")/../.."
sizes="${1:-1000,10000,100000}"
shift || true
if ! command -v bird >/dev/null || ! command -v birdc >/dev/null; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        echo "== installing BIRD 2 (bird2) for the side-by-side run"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q bird2 >/dev/null \
            || echo "bird2 could not be installed: the BIRD side will be skipped"
        # The package may start a system BIRD; the benchmark runs its own.
        pkill -x bird 2>/dev/null || true
    else
        echo "BIRD 2 is not installed and apt-get is not usable here: the BIRD side will be skipped"
    fi
fi
cargo run --release --locked -q -p trellis-testbed -- bench table --routes "$sizes" --bird --poll "$@"
