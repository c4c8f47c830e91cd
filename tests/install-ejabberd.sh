#!/usr/bin/env bash
# Installs ejabberd 24.12 (Debian bookworm-backports) for the second-server tests
# (tests/tests/second_server.rs). Run after install-prosody.sh, which adds the backports source.
# Idempotent. Stops any system ejabberd the package started: the tests run their own nodes.
set -euo pipefail

log() { echo "install-ejabberd: $*" >&2; }

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO=(sudo); else log "must run as root"; exit 1; fi
fi

installed() { dpkg-query -W -f='${db:Status-Abbrev} ${Version}' ejabberd 2>/dev/null || true; }

case "$(installed)" in
    "ii "*24.*) log "ejabberd already installed ($(dpkg-query -W -f='${Version}' ejabberd))"; exit 0 ;;
esac

args=()
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
[ "$codename" = "bookworm" ] && args=(-t bookworm-backports)
install() {
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends -o Dpkg::Options::=--force-confold \
        "${args[@]}" ejabberd
}
if ! install; then
    log "apt-get update, then again"
    "${SUDO[@]}" apt-get update -q
    install
fi

# The package may have started the system node; the tests want the ports and epmd to themselves.
"${SUDO[@]}" service ejabberd stop >/dev/null 2>&1 || true
if command -v update-rc.d >/dev/null 2>&1; then
    "${SUDO[@]}" update-rc.d ejabberd disable >/dev/null 2>&1 || true
fi
case "$(installed)" in
    "ii "*24.*) log "installed ejabberd $(dpkg-query -W -f='${Version}' ejabberd)" ;;
    *) log "expected ejabberd 24.x, got '$(installed)'"; exit 1 ;;
esac
