# shellcheck shell=bash
# Shared helpers for scripts/services.sh: output, timing, waits, pid files, ports, apt.
# Sourced, never executed. Expects REPO_ROOT to be set; sets up the runtime folder
# (RUNTIME_DIR, LOG_DIR, RUN_DIR) every script shares. LOG_PREFIX names the caller in messages.

# --- output -------------------------------------------------------------------------

RUNTIME_DIR=${HEALTHSTREAM_RUNTIME_DIR:-$REPO_ROOT/.runtime}
mkdir -p "$RUNTIME_DIR"
RUNTIME_DIR=$(cd "$RUNTIME_DIR" && pwd)
LOG_DIR="$RUNTIME_DIR/logs"
RUN_DIR="$RUNTIME_DIR/run"
mkdir -p "$LOG_DIR" "$RUN_DIR"
# mariadbd and friends live in /usr/sbin, which a non-login root shell may not have.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
LOG_PREFIX=${LOG_PREFIX:-services}

log() { printf '[%s] %s\n' "$LOG_PREFIX" "$*"; }
warn() { printf '[%s] WARNING: %s\n' "$LOG_PREFIX" "$*" >&2; }
die() {
    printf '[%s] ERROR: %s\n' "$LOG_PREFIX" "$*" >&2
    exit 1
}

# Milliseconds since the epoch, for step timings.
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# "12.3s" for the time elapsed since $1 (from now_ms).
elapsed_since() {
    local ms=$(($(now_ms) - $1))
    printf '%d.%ds' $((ms / 1000)) $(((ms % 1000) / 100))
}

# Last lines of a log file, indented, to put the cause right under an error message.
log_tail() {
    local file=$1 lines=${2:-15}
    if [[ -s $file ]]; then
        printf '  --- last %s lines of %s ---\n' "$lines" "$file" >&2
        tail -n "$lines" "$file" | sed 's/^/  | /' >&2
    fi
}

# --- waiting ------------------------------------------------------------------------

# wait_until TIMEOUT_S DESCRIPTION PID COMMAND...
# Re-run COMMAND every 0.5 s until it succeeds. Fails when TIMEOUT_S elapse, or at once
# when PID (if not empty) dies: no point waiting 2 minutes for a process that crashed.
wait_until() {
    local timeout_s=$1 what=$2 pid=$3
    shift 3
    local deadline=$((SECONDS + timeout_s))
    while true; do
        if "$@" >/dev/null 2>&1; then
            return 0
        fi
        if [[ -n $pid ]] && ! pid_alive "$pid"; then
            WAIT_FAILURE="$what: process $pid exited before it became ready"
            return 1
        fi
        if ((SECONDS >= deadline)); then
            WAIT_FAILURE="$what: not ready after ${timeout_s}s"
            if [[ -n $pid ]]; then
                WAIT_FAILURE+=" (pid $pid still runs: \`scripts/services.sh down\` stops it)"
            fi
            return 1
        fi
        sleep 0.5
    done
}

# --- processes and pid files ----------------------------------------------------------
# A service is "ours" only when RUN_DIR/<name>.pid exists and names a live process whose
# command matches: a stale pid file (after a reboot, say) must never make `down` kill a
# stranger that happens to have the same pid.

# A zombie counts as dead: it has exited, only its parent (often init, for our setsid'd
# daemons) has not reaped it yet, and some container inits reap only every few seconds.
pid_alive() {
    local stat
    [[ -n ${1:-} ]] && kill -0 "$1" 2>/dev/null || return 1
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    # Field 3 (state) follows "(comm)", and comm may contain spaces or parentheses.
    stat=${stat##*) }
    [[ ${stat%% *} != Z ]]
}

# pid_matches PID PATTERN: the live process PID has PATTERN in its command line.
pid_matches() {
    local pid=$1 pattern=$2 cmdline
    pid_alive "$pid" || return 1
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    [[ $cmdline == *"$pattern"* ]]
}

pid_file() { echo "$RUN_DIR/$1.pid"; }

# Print the pid of service $1 if we started it and it still runs; else nothing.
# Removes a stale pid file on the way.
owned_pid() {
    local name=$1 pattern=$2 file pid
    file=$(pid_file "$name")
    [[ -f $file ]] || return 0
    pid=$(<"$file")
    if pid_matches "$pid" "$pattern"; then
        echo "$pid"
    else
        rm -f "$file"
    fi
}

record_pid() { echo "$2" >"$(pid_file "$1")"; }
forget_pid() { rm -f "$(pid_file "$1")"; }

# stop_pid NAME PID TIMEOUT_S LOGFILE: SIGTERM, wait for exit, SIGKILL after the timeout.
stop_pid() {
    local name=$1 pid=$2 timeout_s=$3 logfile=$4 started
    started=$(now_ms)
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + timeout_s))
    while pid_alive "$pid"; do
        if ((SECONDS >= deadline)); then
            warn "$name (pid $pid) still running ${timeout_s}s after SIGTERM; sending SIGKILL (see $logfile)"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.5
            break
        fi
        sleep 0.2
    done
    log "$name stopped (pid $pid) in $(elapsed_since "$started")"
}

# --- ports ------------------------------------------------------------------------------

# port_open PORT: something accepts TCP connections on 127.0.0.1:PORT.
port_open() {
    timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# listener_pid PORT: pid of the process listening on PORT (any address), or nothing.
# Reads /proc directly so it works without ss/netstat (iproute2 may be missing).
listener_pid() {
    local port_hex inodes inode fd
    port_hex=$(printf '%04X' "$1")
    # Columns: sl local_address rem_address st ... inode; st 0A = LISTEN.
    inodes=$(awk -v p=":$port_hex" '$2 ~ p"$" && $4 == "0A" {print $10}' \
        /proc/net/tcp /proc/net/tcp6 2>/dev/null | sort -u)
    [[ -n $inodes ]] || return 0
    for inode in $inodes; do
        for fd in /proc/[0-9]*/fd/*; do
            if [[ $(readlink "$fd" 2>/dev/null) == "socket:[$inode]" ]]; then
                fd=${fd#/proc/}
                echo "${fd%%/*}"
                return 0
            fi
        done
    done
}

# "pid 123 (mysqld)" for whoever listens on PORT, for error messages.
describe_listener() {
    local pid
    pid=$(listener_pid "$1")
    if [[ -n $pid ]]; then
        echo "pid $pid ($(cat "/proc/$pid/comm" 2>/dev/null || echo '?'))"
    else
        echo "an unknown process"
    fi
}

# --- packages -----------------------------------------------------------------------------

APT_UPDATED=0

# apt_install PACKAGE...: install Debian packages without starting their daemons.
apt_install() {
    local sudo=()
    if ((EUID != 0)); then
        command -v sudo >/dev/null || die "need root (or sudo) to apt-get install $*"
        sudo=(sudo)
    fi
    command -v apt-get >/dev/null ||
        die "apt-get not found: install $* yourself (this script knows Debian/Ubuntu only)"

    # Debian's postinst scripts start mariadb/redis through invoke-rc.d. They would grab
    # 3306/6379 with Debian's own config before ours; policy-rc.d exiting 101 forbids that.
    # Only add (and later remove) it when the machine has none: never clobber one.
    local policy=/usr/sbin/policy-rc.d added_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\n# added by healthstream scripts/services.sh during apt-get install\nexit 101\n' |
            "${sudo[@]}" tee "$policy" >/dev/null
        "${sudo[@]}" chmod 755 "$policy"
        added_policy=1
        # Interrupted mid-install: still remove it, or no daemon could ever start via apt.
        # shellcheck disable=SC2064  # expand now: $policy and sudo are locals
        trap "${sudo[*]} rm -f $policy" EXIT
    fi

    local started rc=0
    started=$(now_ms)
    if ((APT_UPDATED == 0)); then
        log "apt-get update"
        "${sudo[@]}" apt-get update -qq || rc=$?
        APT_UPDATED=1
    fi
    if ((rc == 0)); then
        log "apt-get install $*"
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            --no-install-recommends -o Dpkg::Use-Pty=0 "$@" >"$LOG_DIR/apt.log" 2>&1 || rc=$?
    fi
    if ((added_policy)); then
        "${sudo[@]}" rm -f "$policy"
        trap - EXIT
    fi
    if ((rc != 0)); then
        log_tail "$LOG_DIR/apt.log" 30
        die "apt-get install $* failed (exit $rc); full output in $LOG_DIR/apt.log"
    fi
    log "packages installed in $(elapsed_since "$started"): $*"
}
