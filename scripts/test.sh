#!/usr/bin/env bash
# Installs what is missing and runs every test: unit and property tests of the core, then the
# end-to-end scenarios against a real Prosody started by the tests.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
source scripts/common.sh

ensure_toolchain
ensure_packages
# The second server for the end-to-end tests (ejabberd 24.12, from the same backports).
bash tests/install-ejabberd.sh
use_build_cache

# The core's modules import each other in one direction only (ARCHITECTURE.md, "Layers").
python3 scripts/check-layers.py
build_ui
(cd ui && npm test)
cargo build --locked -p tether-core --bin tether
# The mobile bindings: the library's dependency tree has no C crypto (rustls + ring), Swift,
# Kotlin and Python are generated from the built library, and the Kotlin test app is compiled.
bash bindings/check-mobile-deps.sh
bash bindings/generate.sh
bash bindings/apple/check.sh
bash tests/ffi/build-kotlin.sh
# The push app server of the end-to-end tests is a slixmpp component.
TETHER_SLIXMPP_PYTHON="$(slix_python)"
export TETHER_SLIXMPP_PYTHON
# Two test threads: each end-to-end test runs its own Prosody and clients; the machine has 2 cores.
cargo test --locked --workspace -- --test-threads=2
# The benchmark harness, small, so that it cannot rot (no timing is asserted anywhere).
bash tests/bench/run.sh --smoke
# A short fuzz run of the core (30 s per target; FUZZ_SECONDS sets it), after replaying every
# input a fuzz run ever crashed on.
bash core/fuzz/run.sh
# The desktop installer: built offline, unpacked, started in a real (virtual) display.
bash tests/desktop/deb-smoke.sh
# The app in a real window over WebDriver, against Prosody and the fault proxy (screenshots in
# tests/artifacts/).
bash tests/desktop/window.sh
