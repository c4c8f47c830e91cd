#!/usr/bin/env bash
# Installs Prosody 13 for Tether's end-to-end tests (tether-e2e), with Debian's
# prosody-modules (mod_sasl2, mod_sasl2_bind2, mod_sasl2_sm, mod_sasl2_fast: the
# fast-reconnect tests load them).
#
# Idempotent: does nothing if Prosody 13.x and those modules are installed. Otherwise,
# on Debian bookworm, makes sure an apt source for bookworm-backports exists
# and installs prosody from it; on later Debian releases, installs prosody from
# the release itself. Then stops any system Prosody the package started: the
# tests run their own servers, each in its own directory on its own port.
#
# Runs as root, or through sudo when not root.
set -euo pipefail

log() { echo "install-prosody: $*" >&2; }

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        log "must run as root (or with sudo available)"
        exit 1
    fi
fi

# The installed Prosody's major version, or nothing. Asks dpkg rather than
# `prosody --version`, which refuses to run as root.
prosody_major() {
    local version
    version=$(dpkg-query -W -f='${db:Status-Abbrev} ${Version}' prosody 2>/dev/null || true)
    case "$version" in
        ii*) version=${version##* } ;;
        *) return 0 ;;
    esac
    # e.g. "13.0.1-1~bpo12+1" -> "13" (an epoch like "1:" is dropped).
    version=${version#*:}
    echo "${version%%.*}"
}

SASL2_MODULES="/usr/lib/prosody/modules/mod_sasl2_sm/mod_sasl2_sm.lua"
if [ "$(prosody_major)" = "13" ] && command -v prosody >/dev/null 2>&1 && [ -r "$SASL2_MODULES" ]; then
    log "Prosody 13 already installed ($(dpkg-query -W -f='${Version}' prosody)), with prosody-modules"
    exit 0
fi

codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
install_args=()
if [ "$codename" = "bookworm" ]; then
    # Any enabled source (one-line or deb822 format) naming bookworm-backports?
    if ! grep -qsE '^[^#]*\bbookworm-backports\b' \
        /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; then
        log "adding an apt source for bookworm-backports"
        echo "deb http://deb.debian.org/debian bookworm-backports main" |
            "${SUDO[@]}" tee /etc/apt/sources.list.d/tether-backports.list >/dev/null
    fi
    install_args=(-t bookworm-backports)
fi

# A full update: one restricted to a single source list would drop the
# others' package lists.
log "apt-get update"
"${SUDO[@]}" apt-get update -q
log "installing prosody prosody-modules ${install_args[*]}"
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q -o Dpkg::Options::=--force-confold "${install_args[@]}" prosody prosody-modules

# The package may have started the system service (there is no systemd in
# CI; its init script may have run). Stop it and keep it from starting again.
"${SUDO[@]}" service prosody stop >/dev/null 2>&1 || true
for pidfile in /run/prosody/prosody.pid /var/run/prosody/prosody.pid; do
    [ -r "$pidfile" ] || continue
    pid=$(tr -dc '0-9' <"$pidfile")
    # Only that pid, and only if it really is a prosody process.
    if [ -n "$pid" ] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q prosody; then
        log "stopping the system Prosody (pid $pid)"
        "${SUDO[@]}" kill "$pid" || true
        for _ in $(seq 50); do
            [ -d "/proc/$pid" ] || break
            sleep 0.1
        done
        if [ -d "/proc/$pid" ]; then
            "${SUDO[@]}" kill -KILL "$pid" || true
        fi
    fi
done
if command -v update-rc.d >/dev/null 2>&1; then
    "${SUDO[@]}" update-rc.d prosody disable >/dev/null 2>&1 || true
fi

major=$(prosody_major)
if [ "$major" != "13" ]; then
    log "expected Prosody 13, got '${major:-none}'"
    exit 1
fi
if [ ! -r "$SASL2_MODULES" ]; then
    log "prosody-modules lacks mod_sasl2_sm ($SASL2_MODULES)"
    exit 1
fi
log "installed Prosody $(dpkg-query -W -f='${Version}' prosody)"
