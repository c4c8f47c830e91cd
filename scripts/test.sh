#!/usr/bin/env bash
# Installs what is missing and runs every test: unit and property tests of the core, then the
# end-to-end scenarios against a real Prosody started by the tests. Each step says how long it
# took; the summary at the end says where the time went.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
source scripts/common.sh
trap step_summary EXIT

step toolchain ensure_toolchain
step "system packages" ensure_packages
# The second server for the end-to-end tests (ejabberd 24.12, from the same backports).
step ejabberd bash tests/install-ejabberd.sh
use_build_cache
# Every script below builds with these flags (scripts/common.sh): one feature set, each crate once.
export TETHER_UNIFIED_BUILD=1

# The core's modules import each other in one direction only (ARCHITECTURE.md, "Layers").
step layers python3 scripts/check-layers.py
step "ui build" build_ui
step "ui tests" bash -c 'cd ui && npm test'
# The whole workspace, every target, once (the desktop app embeds ui/dist, built above).
step "workspace build" build_workspace
# The mobile bindings: the library's dependency tree has no C crypto (rustls + ring), Swift,
# Kotlin and Python are generated from the built library, and the Kotlin test app is compiled.
step "mobile deps" bash bindings/check-mobile-deps.sh
step "bindings" bash bindings/generate.sh
step "swift check" bash bindings/apple/check.sh
step "kotlin app" bash tests/ffi/build-kotlin.sh
# The push app server of the end-to-end tests is a slixmpp component.
TETHER_SLIXMPP_PYTHON="$(slix_python)"
export TETHER_SLIXMPP_PYTHON
# Every test of the workspace (scripts/common.sh: run_tests): each end-to-end test runs its own
# Prosody and clients, and mostly waits on them, so four run at once across all test binaries.
step "tests" run_tests
# The benchmark harness, small, so that it cannot rot (no timing is asserted anywhere).
step "bench smoke" bash tests/bench/run.sh --smoke
# A short fuzz run of the core (30 s per target; FUZZ_SECONDS sets it), after replaying every
# input a fuzz run ever crashed on.
step fuzz bash core/fuzz/run.sh
# The installer people get: the release .deb, installed with apt-get, started from where it was
# installed in a real (virtual) display, and removed cleanly.
step "deb install" bash tests/desktop/deb-install.sh
# The app in a real window over WebDriver, against Prosody and the fault proxy (screenshots in
# tests/artifacts/).
step "window tests" bash tests/desktop/window.sh
