#!/usr/bin/env bash
# Local backing services for healthstream, without Docker: Apache Kafka (KRaft, single
# node), MariaDB and Redis, all bound to 127.0.0.1 with state under one runtime folder.
#
#   scripts/services.sh up     [kafka|mariadb|redis ...]   start (or reuse) and wait until ready
#   scripts/services.sh down   [kafka|mariadb|redis ...]   stop what this script started
#   scripts/services.sh status [kafka|mariadb|redis ...]   exit 0 when all are up, 3 otherwise
#   scripts/services.sh env                                print the exports for the chosen ports
#
# A fresh Debian machine is enough: missing packages are apt-get installed (needs root),
# Kafka jars are fetched once from Maven Central into .cache/kafka-libs/.
#
# Rules:
# - `up` is idempotent: a service already up is left as is, so a second `up` takes seconds.
# - A service already answering on its port but not started by us (Debian's own MariaDB,
#   a developer's Redis) is reused, and `down` leaves it alone: we only stop pids we
#   recorded in <runtime>/run/<service>.pid.
# - Data survives `down`/`up` (the fault-injection tests restart MariaDB mid-run); delete
#   the runtime folder for a clean slate.
#
# Environment: HEALTHSTREAM_RUNTIME_DIR (default <repo>/.runtime),
# HEALTHSTREAM_{KAFKA,MARIADB,REDIS}_{START,STOP}_TIMEOUT in seconds,
# HEALTHSTREAM_KAFKA_PORT (9092), HEALTHSTREAM_KAFKA_CONTROLLER_PORT (9093),
# HEALTHSTREAM_MARIADB_PORT (3306), HEALTHSTREAM_REDIS_PORT (6379): a second stack on
# other ports needs its own runtime folder too (data, pid files and the lock live there).
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib/common.sh
source "$REPO_ROOT/scripts/lib/common.sh"
# shellcheck source=scripts/lib/mariadb.sh
source "$REPO_ROOT/scripts/lib/mariadb.sh"
# shellcheck source=scripts/lib/redis.sh
source "$REPO_ROOT/scripts/lib/redis.sh"
# shellcheck source=scripts/lib/kafka.sh
source "$REPO_ROOT/scripts/lib/kafka.sh"

# Display and wait order; `down` goes in reverse.
ALL_SERVICES=(mariadb redis kafka)
# Launch order: Kafka first, as its preparation (jar download, storage format) and JVM
# boot take longest; MariaDB and Redis come up while it boots.
LAUNCH_ORDER=(kafka mariadb redis)

usage() {
    # The header comment of this file, up to the first non-comment line.
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
    exit 2
}

print_endpoints() {
    echo "export KAFKA_BOOTSTRAP_SERVERS=$KAFKA_BOOTSTRAP"
    echo "export DATABASE_URL=mysql+pymysql://root@127.0.0.1:$MARIADB_PORT/$MARIADB_DATABASE"
    echo "export REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0"
}

# One services.sh at a time changes state (make -j, a test restarting MariaDB while a
# developer runs `up`). The lock fd (9) is closed in every daemon we launch.
take_lock() {
    exec 9>"$RUN_DIR/services.lock"
    if ! flock -w 300 9; then
        die "another scripts/services.sh has held $RUN_DIR/services.lock for 5 minutes"
    fi
}

ensure_packages() {
    local svc packages=()
    for svc in "$@"; do
        mapfile -t -O "${#packages[@]}" packages < <("${svc}_missing_packages")
    done
    if ((${#packages[@]})); then
        apt_install "${packages[@]}"
    fi
}

cmd_up() {
    local started svc state
    started=$(now_ms)
    take_lock
    ensure_packages "$@"

    # 1. Decide per service (ours / reused / start it) and launch what is missing without
    #    waiting, so the services boot in parallel.
    local -A launched_at=() wait_pid=()
    for svc in "${LAUNCH_ORDER[@]}"; do
        [[ " $* " == *" $svc "* ]] || continue
        state=$("${svc}_state")
        case $state in
        ours)
            # Ours and running; phase 2 still checks that it answers (a hung server is
            # not "up").
            wait_pid[$svc]=$("${svc}_owned_pid")
            log "$svc already up (pid ${wait_pid[$svc]}, started by services.sh)"
            ;;
        reused)
            log "$svc already up on 127.0.0.1:$("${svc}_port") (reused: not started by services.sh, so \`down\` leaves it alone)"
            ;;
        *)
            log "$svc: starting"
            launched_at[$svc]=$(now_ms)
            "${svc}_launch"
            case $svc in
            kafka) wait_pid[$svc]=$KAFKA_LAUNCHED_PID ;;
            mariadb) wait_pid[$svc]=$MARIADB_LAUNCHED_PID ;;
            redis) wait_pid[$svc]=$REDIS_LAUNCHED_PID ;;
            esac
            ;;
        esac
    done

    # 2. Wait until each of our services really answers, then set it up.
    for svc in "$@"; do
        if [[ -n ${wait_pid[$svc]:-} ]]; then
            "${svc}_wait" "${wait_pid[$svc]}"
        fi
        if [[ -n ${launched_at[$svc]:-} ]]; then
            log "$svc up in $(elapsed_since "${launched_at[$svc]}") (pid ${wait_pid[$svc]}, 127.0.0.1:$("${svc}_port"), log $("${svc}_log"))"
        fi
        "${svc}_post_start"
    done

    log "all requested services up ($*) in $(elapsed_since "$started"); runtime folder $RUNTIME_DIR"
    print_endpoints
}

cmd_down() {
    local svc i
    take_lock
    for ((i = ${#ALL_SERVICES[@]} - 1; i >= 0; i--)); do
        svc=${ALL_SERVICES[i]}
        [[ " $* " == *" $svc "* ]] || continue
        if "${svc}_stop"; then
            continue
        fi
        if port_open "$("${svc}_port")"; then
            log "$svc left alone: 127.0.0.1:$("${svc}_port") is served by $(describe_listener "$("${svc}_port")"), not started by services.sh"
        else
            log "$svc already down"
        fi
    done
}

cmd_status() {
    local svc pid state owner rc=0
    echo "runtime folder: $RUNTIME_DIR"
    printf '%-8s %-6s %-8s %-16s %-12s %s\n' SERVICE STATE PID ADDRESS STARTED-BY LOG
    for svc in "$@"; do
        pid=$("${svc}_owned_pid")
        owner=services.sh
        if [[ -z $pid ]]; then
            owner=-
            if port_open "$("${svc}_port")"; then
                pid=$(listener_pid "$("${svc}_port")")
                owner=other
            fi
        fi
        if "${svc}_answers" >/dev/null 2>&1; then
            state=up
        elif [[ -n $pid ]]; then
            state=NOT-READY
            rc=3
        else
            state=down
            rc=3
        fi
        printf '%-8s %-6s %-8s %-16s %-12s %s\n' "$svc" "$state" "${pid:--}" \
            "127.0.0.1:$("${svc}_port")" "$owner" "$("${svc}_log")"
    done
    return "$rc"
}

# A typo in a port variable must fail here, not as a confusing bind error in a log file.
check_ports() {
    local name value
    for name in KAFKA_PORT KAFKA_CONTROLLER_PORT MARIADB_PORT REDIS_PORT; do
        value=${!name}
        [[ $value =~ ^[0-9]+$ ]] && ((value > 0 && value < 65536)) ||
            die "$name=$value is not a TCP port (set by HEALTHSTREAM_$name)"
    done
}

main() {
    local cmd=${1:-}
    [[ -n $cmd ]] || usage
    shift
    check_ports
    local services=("$@") svc
    if ((${#services[@]} == 0)); then
        services=("${ALL_SERVICES[@]}")
    fi
    # Validate names, and put them in start order whatever order they were given in.
    local ordered=()
    for svc in "${services[@]}"; do
        [[ " ${ALL_SERVICES[*]} " == *" $svc "* ]] ||
            die "unknown service '$svc' (expected: ${ALL_SERVICES[*]})"
    done
    for svc in "${ALL_SERVICES[@]}"; do
        [[ " ${services[*]} " == *" $svc "* ]] && ordered+=("$svc")
    done

    case $cmd in
    up) cmd_up "${ordered[@]}" ;;
    down) cmd_down "${ordered[@]}" ;;
    status) cmd_status "${ordered[@]}" ;;
    env) print_endpoints ;;
    -h | --help | help) usage ;;
    *) die "unknown command '$cmd' (expected: up, down, status, env)" ;;
    esac
}

main "$@"
