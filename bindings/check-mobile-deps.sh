#!/usr/bin/env bash
# Checks the mobile library's dependency tree, for every target platform: TLS is rustls with the
# ring backend, and nothing pulls in aws-lc or OpenSSL (C crypto that cross-compiles badly to
# iOS and Android). Also checks that the CLI's own dependencies stay out of it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
tree=$(cargo tree --locked -p tether-ffi -e normal,build --target all --prefix none --no-dedupe | sort -u)
fail=0
for bad in aws-lc-rs aws-lc-sys openssl openssl-sys native-tls clap tracing-subscriber; do
  if grep -q "^$bad v" <<<"$tree"; then
    echo "tether-ffi depends on $bad:" >&2
    cargo tree -p tether-ffi -e normal,build --target all -i "$bad" >&2 || true
    fail=1
  fi
done
for good in rustls ring tokio-rustls rusqlite; do
  grep -q "^$good v" <<<"$tree" || { echo "tether-ffi does not depend on $good" >&2; fail=1; }
done
[[ $fail == 0 ]] && echo "tether-ffi dependency tree: rustls + ring, no aws-lc/OpenSSL, no CLI crates ($(wc -l <<<"$tree") crates)"
exit $fail
