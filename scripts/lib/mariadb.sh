# shellcheck shell=bash
# MariaDB (Debian's mariadb-server) for scripts/services.sh: a private server with a
# throwaway datadir under the runtime folder, root without password over TCP 127.0.0.1.

MARIADB_PORT=${HEALTHSTREAM_MARIADB_PORT:-3306}
# Interleaved (2) is MySQL 8's default and what production servers run; the sink's tests
# start private servers with 0 and 1 to show the write path holds under each.
MARIADB_AUTOINC_LOCK_MODE=${HEALTHSTREAM_MARIADB_AUTOINC_LOCK_MODE:-2}
# Extra mariadbd options, space-separated (bench/growth.py: a private server with
# --plugin-load-add=ha_rocksdb, which cannot be INSTALLed at run time on Debian 12).
MARIADB_EXTRA_ARGS=${HEALTHSTREAM_MARIADB_EXTRA_ARGS:-}
MARIADB_DATABASE=health
MARIADB_DIR="$RUNTIME_DIR/mariadb"
MARIADB_DATADIR="$MARIADB_DIR/data"
MARIADB_SOCKET="$MARIADB_DIR/mysqld.sock"
MARIADB_PIDFILE="$MARIADB_DIR/mysqld.pid"
MARIADB_LOG="$LOG_DIR/mariadb.log"
# mariadbd's own stdout/stderr (normally empty: everything goes to --log-error).
MARIADB_OUT="$LOG_DIR/mariadb.out"
MARIADB_START_TIMEOUT=${HEALTHSTREAM_MARIADB_START_TIMEOUT:-60}
MARIADB_STOP_TIMEOUT=${HEALTHSTREAM_MARIADB_STOP_TIMEOUT:-60}
MARIADB_PROC_PATTERN="--datadir=$MARIADB_DATADIR"

mariadb_missing_packages() {
    command -v mariadbd >/dev/null || echo mariadb-server
    command -v mariadb >/dev/null || echo mariadb-client
}

mariadb_port() { echo "$MARIADB_PORT"; }
mariadb_log() { echo "$MARIADB_LOG"; }
mariadb_owned_pid() { owned_pid mariadb "$MARIADB_PROC_PATTERN"; }

# mariadb client; --no-defaults keeps /etc/mysql/*.cnf (Debian's socket, users) out of it.
mariadb_tcp() {
    mariadb --no-defaults --protocol=tcp -h127.0.0.1 -P"$MARIADB_PORT" -uroot \
        --connect-timeout=3 "$@"
}
mariadb_socket() {
    mariadb --no-defaults --protocol=socket -S "$MARIADB_SOCKET" -uroot --connect-timeout=3 "$@"
}

# A real query over TCP, as the application will connect.
mariadb_answers() { mariadb_tcp -N -e 'SELECT 1' | grep -qx 1; }
mariadb_socket_answers() { mariadb_socket -N -e 'SELECT 1' | grep -qx 1; }

# Create the system tables once. Restarts (the fault-injection tests run
# `down mariadb` / `up mariadb` mid-test) must keep the data, so never re-initialise.
mariadb_install_db() {
    if [[ -d $MARIADB_DATADIR/mysql ]]; then
        return 0
    fi
    local started
    started=$(now_ms)
    rm -rf "$MARIADB_DATADIR"
    mkdir -p "$MARIADB_DATADIR"
    # normal auth: root@localhost with an empty password (no unix_socket plugin), which
    # is what a throwaway test server wants.
    if ! mariadb-install-db --no-defaults --user=root --auth-root-authentication-method=normal \
        --skip-test-db --datadir="$MARIADB_DATADIR" >"$LOG_DIR/mariadb-install-db.log" 2>&1 9>&-; then
        log_tail "$LOG_DIR/mariadb-install-db.log" 30
        rm -rf "$MARIADB_DATADIR"
        die "mariadb: mariadb-install-db failed; see $LOG_DIR/mariadb-install-db.log"
    fi
    log "mariadb: datadir initialised in $MARIADB_DATADIR ($(elapsed_since "$started"))"
}

mariadb_state() {
    local pid
    pid=$(mariadb_owned_pid)
    if [[ -n $pid ]]; then
        echo ours
        return 0
    fi
    if port_open "$MARIADB_PORT"; then
        # Someone else's server (Debian's, a developer's): fine if root gets in without a
        # password, as DATABASE_URL expects.
        mariadb_answers ||
            die "mariadb: 127.0.0.1:$MARIADB_PORT is taken by $(describe_listener "$MARIADB_PORT"), which does not accept 'mariadb -h127.0.0.1 -uroot' without a password; stop it or free the port"
        echo reused
        return 0
    fi
}

mariadb_launch() {
    mkdir -p "$MARIADB_DIR"
    mariadb_install_db
    # Leftovers of a SIGKILLed server: a stale pid file would mislead anyone reading it.
    rm -f "$MARIADB_PIDFILE" "$MARIADB_SOCKET"
    # Tuned for a 2-core test box with throwaway data: a big buffer pool, no fsync per
    # commit (flush once a second), a large redo log for bulk inserts from the consumer,
    # and interleaved auto-increment locking: with the default (1) the replicas' concurrent
    # LOAD DATA statements queue on the table's AUTO-INC lock. Mode 2 is safe without a
    # binlog or with row-based binlogging; the sink never relies on consecutive ids, and
    # proves every row it skips a duplicate (mode 2 can skip new rows on PRIMARY).
    # --no-defaults: Debian's /etc/mysql config must not leak in (its datadir, socket).
    # setsid / 9>&- / output to files: see kafka_launch. MARIADB_EXTRA_ARGS is split on
    # spaces on purpose (one option per word).
    # shellcheck disable=SC2086
    setsid mariadbd --no-defaults --user=root \
        --datadir="$MARIADB_DATADIR" \
        --bind-address=127.0.0.1 --port="$MARIADB_PORT" \
        --socket="$MARIADB_SOCKET" --pid-file="$MARIADB_PIDFILE" \
        --log-error="$MARIADB_LOG" \
        --skip-name-resolve \
        --max-connections=500 \
        --max-allowed-packet=64M \
        --character-set-server=utf8mb4 --collation-server=utf8mb4_unicode_ci \
        --innodb-buffer-pool-size=1G \
        --innodb-log-file-size=256M \
        --innodb-flush-log-at-trx-commit=2 \
        --skip-log-bin \
        --innodb-autoinc-lock-mode="$MARIADB_AUTOINC_LOCK_MODE" \
        $MARIADB_EXTRA_ARGS \
        </dev/null >>"$MARIADB_OUT" 2>&1 9>&- &
    MARIADB_LAUNCHED_PID=$!
    record_pid mariadb "$MARIADB_LAUNCHED_PID"
}

mariadb_wait() {
    local pid=$1
    # Our own server: the socket answers first; root@127.0.0.1 may not exist yet.
    if ! wait_until "$MARIADB_START_TIMEOUT" "mariadb (socket $MARIADB_SOCKET)" "$pid" \
        mariadb_socket_answers; then
        log_tail "$MARIADB_LOG" 20
        die "$WAIT_FAILURE; see $MARIADB_LOG"
    fi
    mariadb_setup_root_tcp
    if ! wait_until 10 "mariadb on 127.0.0.1:$MARIADB_PORT" "$pid" mariadb_answers; then
        log_tail "$MARIADB_LOG" 20
        die "$WAIT_FAILURE (SELECT 1 as root over TCP failed); see $MARIADB_LOG"
    fi
}

# With --skip-name-resolve a TCP client from 127.0.0.1 only matches accounts whose host is
# an IP (or '%'), never 'localhost': give root an explicit 127.0.0.1 account.
mariadb_setup_root_tcp() {
    mariadb_socket -e "
        CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';
        GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;" ||
        die "mariadb: could not create root@127.0.0.1 over the socket; see $MARIADB_LOG"
}

# After the server answers (ours or reused): the application's database.
mariadb_post_start() {
    mariadb_tcp -e "CREATE DATABASE IF NOT EXISTS \`$MARIADB_DATABASE\`
                    CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci" ||
        die "mariadb: could not create database $MARIADB_DATABASE; see $MARIADB_LOG"
}

mariadb_stop() {
    local pid
    pid=$(mariadb_owned_pid)
    [[ -n $pid ]] || return 1
    # SIGTERM is mariadbd's clean shutdown (flushes InnoDB); SIGKILL only as a last resort.
    stop_pid mariadb "$pid" "$MARIADB_STOP_TIMEOUT" "$MARIADB_LOG"
    forget_pid mariadb
}
