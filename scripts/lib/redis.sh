# shellcheck shell=bash
# Redis (Debian's redis-server) for scripts/services.sh: memory only, no persistence.

REDIS_PORT=${HEALTHSTREAM_REDIS_PORT:-6379}
REDIS_DIR="$RUNTIME_DIR/redis"
REDIS_PIDFILE="$REDIS_DIR/redis.pid"
REDIS_LOG="$LOG_DIR/redis.log"
# Output before redis-server daemonizes and opens its --logfile (bad flags, say).
REDIS_OUT="$LOG_DIR/redis.out"
REDIS_START_TIMEOUT=${HEALTHSTREAM_REDIS_START_TIMEOUT:-30}
REDIS_STOP_TIMEOUT=${HEALTHSTREAM_REDIS_STOP_TIMEOUT:-20}
REDIS_PROC_PATTERN="127.0.0.1:$REDIS_PORT"

redis_missing_packages() {
    # redis-cli comes with redis-tools, a dependency of redis-server.
    if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
        echo redis-server
    fi
}

redis_port() { echo "$REDIS_PORT"; }
redis_log() { echo "$REDIS_LOG"; }
redis_owned_pid() {
    # redis-server rewrites its argv to "redis-server 127.0.0.1:6379".
    owned_pid redis "$REDIS_PROC_PATTERN" | while read -r pid; do
        [[ $(cat "/proc/$pid/comm" 2>/dev/null) == redis-server ]] && echo "$pid"
    done
}

redis_answers() { [[ $(timeout 3 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]; }

redis_state() {
    local pid
    pid=$(redis_owned_pid)
    if [[ -n $pid ]]; then
        echo ours
        return 0
    fi
    if port_open "$REDIS_PORT"; then
        redis_answers ||
            die "redis: 127.0.0.1:$REDIS_PORT is taken by $(describe_listener "$REDIS_PORT"), which does not answer PING; stop it or free the port"
        echo reused
        return 0
    fi
}

redis_launch() {
    mkdir -p "$REDIS_DIR"
    rm -f "$REDIS_PIDFILE"
    # Cache only: no RDB snapshots (--save ''), no AOF. --dir keeps any file it might
    # still write out of the repo root.
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
        --dir "$REDIS_DIR" --daemonize yes --pidfile "$REDIS_PIDFILE" \
        --logfile "$REDIS_LOG" </dev/null >>"$REDIS_OUT" 2>&1 9>&- ||
        die "redis: redis-server failed to start; see $REDIS_OUT and $REDIS_LOG"
    # --daemonize forks: the daemon's pid is only known from its pid file.
    local deadline=$((SECONDS + 10))
    until [[ -s $REDIS_PIDFILE ]]; do
        if ((SECONDS >= deadline)); then
            log_tail "$REDIS_LOG"
            die "redis: no pid file $REDIS_PIDFILE 10s after start; see $REDIS_LOG"
        fi
        sleep 0.1
    done
    REDIS_LAUNCHED_PID=$(<"$REDIS_PIDFILE")
    record_pid redis "$REDIS_LAUNCHED_PID"
}

redis_wait() {
    local pid=$1
    if ! wait_until "$REDIS_START_TIMEOUT" "redis on 127.0.0.1:$REDIS_PORT" "$pid" redis_answers; then
        log_tail "$REDIS_LOG"
        die "$WAIT_FAILURE; see $REDIS_LOG"
    fi
}

redis_post_start() { :; }

redis_stop() {
    local pid
    pid=$(redis_owned_pid)
    [[ -n $pid ]] || return 1
    stop_pid redis "$pid" "$REDIS_STOP_TIMEOUT" "$REDIS_LOG"
    forget_pid redis
}
