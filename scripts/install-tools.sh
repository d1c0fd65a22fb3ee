#!/usr/bin/env bash
# Tools the tests need besides the venv: `promtool` (checks and unit-tests the Prometheus
# rules and config) and `prometheus` (the integration test scrapes a live replica with it);
# `wrk`, the HTTP load generator of the gateway benchmark (bench/bench_gateway.py).
#
#   scripts/install-tools.sh
#
# Idempotent: when promtool is already on PATH nothing is installed. Otherwise Debian's
# `prometheus` package, which ships both binaries, is apt-get installed (needs root or sudo)
# without starting its daemon: the tests run their own Prometheus on a free port.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOG_PREFIX=install-tools
# shellcheck source=scripts/lib/common.sh
source "$REPO_ROOT/scripts/lib/common.sh"

# Pids of running Prometheus servers, one per line (a developer's own one included).
prometheus_pids() {
    local exe pid
    for exe in /proc/[0-9]*/exe; do
        if [[ $(readlink "$exe" 2>/dev/null) == */prometheus ]]; then
            pid=${exe#/proc/}
            echo "${pid%%/*}"
        fi
    done
}

if command -v promtool >/dev/null && command -v prometheus >/dev/null; then
    log "promtool and prometheus already installed"
else
    before=$(prometheus_pids | sort)
    # apt_install (scripts/lib/common.sh) adds a policy-rc.d that exits 101 when the machine
    # has none, so the package's postinst cannot start a daemon, with or without systemd.
    apt_install prometheus
    # Belt and braces: a postinst that started the daemon anyway (a machine whose own
    # policy-rc.d allows it) would hold port 9090. Stop only pids that appeared just now.
    for pid in $(comm -13 <(echo "$before") <(prometheus_pids | sort)); do
        warn "the prometheus package started a daemon (pid $pid); stopping it"
        stop_pid prometheus "$pid" 15 "$LOG_DIR/apt.log"
    done
    if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
        systemctl disable --now prometheus.service >/dev/null 2>&1 || true
    fi
fi

if ! command -v wrk >/dev/null; then
    apt_install wrk
fi

command -v promtool >/dev/null || die "promtool still not on PATH after installing prometheus"
command -v wrk >/dev/null || die "wrk still not on PATH after installing it"
log "$(promtool --version 2>&1 | head -n 1)"
log "$(prometheus --version 2>&1 | head -n 1)"
log "$(wrk --version 2>&1 | head -n 1)"
