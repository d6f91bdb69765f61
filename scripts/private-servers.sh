#!/usr/bin/env bash
# Private servers for the chaos scenario that stops and starts its backend (backend-restart),
# so that it never stops a server other tests use. Starts the one named (postgres, mysql,
# redis or memcached) if it is not running yet, on a port of its own, with its data under
# $RUNALL_PRIVATE_DIR (/tmp/runall-private by default), and prints its URL.
#
#   bash scripts/private-servers.sh postgres    # postgres://postgres@127.0.0.1:5442/test
#   bash scripts/private-servers.sh mysql       # mysql://root@127.0.0.1:3316/test
#   bash scripts/private-servers.sh redis       # redis://127.0.0.1:6390
#   bash scripts/private-servers.sh memcached   # memcache://127.0.0.1:11290
#   bash scripts/private-servers.sh redis-cluster  # three masters on 7100-7102
#   bash scripts/private-servers.sh stop        # stops every private server
#   bash scripts/private-servers.sh stop mysql  # stops one (a fast shutdown)
#
# Each runs as a plain process (no service manager), so the chaos harness restarts it by
# stopping it and running its command line again (tests/chaos/src/harness/backend.rs).
set -euo pipefail

DIR="${RUNALL_PRIVATE_DIR:-/tmp/runall-private}"
PG_PORT=5442
MY_PORT=3316
REDIS_PORT=6390
MC_PORT=11290
CLUSTER_PORTS="7100 7101 7102"

up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_up() {
    for _ in $(seq 1 600); do
        up "$1" && return 0
        sleep 0.1
    done
    echo "private-servers: the $2 on port $1 did not start; see $DIR" >&2
    exit 1
}

as_user() {
    local user=$1
    shift
    if [ "$(id -un)" = "$user" ]; then "$@"; else runuser -u "$user" -- "$@"; fi
}

mkdir -p "$DIR"
chmod 755 "$DIR"

case "${1:-}" in
postgres)
    if ! up "$PG_PORT"; then
        bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
        data="$DIR/postgres"
        if [ ! -f "$data/PG_VERSION" ]; then
            rm -rf "$data"
            mkdir -p "$data"
            chown postgres "$data" 2>/dev/null || true
            as_user postgres "$bin/initdb" -D "$data" -A trust -U postgres >"$DIR/postgres-init.log" 2>&1
        fi
        as_user postgres "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w \
            -o "-p $PG_PORT -k $data -c listen_addresses=127.0.0.1" start >/dev/null
        wait_up "$PG_PORT" PostgreSQL
        as_user postgres "$bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -tAc \
            "select 1 from pg_database where datname = 'test'" | grep -q 1 ||
            as_user postgres "$bin/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres test
    fi
    echo "postgres://postgres@127.0.0.1:$PG_PORT/test"
    ;;
mysql)
    if ! up "$MY_PORT"; then
        data="$DIR/mysql"
        if [ ! -d "$data/mysql" ]; then
            rm -rf "$data"
            mariadb-install-db --no-defaults --datadir="$data" --user=root \
                --auth-root-authentication-method=normal --skip-test-db >"$DIR/mysql-init.log" 2>&1
        fi
        # A copy of the server binary, so that `start-stop-daemon --exec /usr/sbin/mariadbd`
        # (how the shared server is started) never takes this one for the shared one.
        [ -x "$DIR/mariadbd" ] || cp /usr/sbin/mariadbd "$DIR/mariadbd"
        setsid -f "$DIR/mariadbd" --no-defaults --datadir="$data" --port="$MY_PORT" \
            --bind-address=127.0.0.1 --socket="$DIR/mysql.sock" --pid-file="$DIR/mysql.pid" \
            --user=root --log-error="$DIR/mysql.log" </dev/null >/dev/null 2>&1
        wait_up "$MY_PORT" MariaDB
        for _ in $(seq 1 100); do
            mariadb -h127.0.0.1 -P"$MY_PORT" -uroot -e "create database if not exists test" 2>/dev/null && break
            sleep 0.1
        done
        mariadb -h127.0.0.1 -P"$MY_PORT" -uroot -e "select 1" >/dev/null
    fi
    echo "mysql://root@127.0.0.1:$MY_PORT/test"
    ;;
redis)
    if ! up "$REDIS_PORT"; then
        redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
            --dir "$DIR" --daemonize yes --logfile "$DIR/redis.log" >/dev/null
        wait_up "$REDIS_PORT" Redis
    fi
    echo "redis://127.0.0.1:$REDIS_PORT"
    ;;
redis-cluster)
    # Three masters, no replicas, as scripts/services.sh makes the shared one on 7000-7002.
    cluster_state() { redis-cli -p "$1" cluster info 2>/dev/null | grep -q "^$2"; }
    cluster_ok() { for p in $CLUSTER_PORTS; do cluster_state "$p" cluster_state:ok || return 1; done; }
    if ! cluster_ok; then
        for p in $CLUSTER_PORTS; do
            if ! up "$p"; then
                mkdir -p "$DIR/cluster/$p"
                redis-server --port "$p" --cluster-enabled yes \
                    --cluster-config-file "$DIR/cluster/$p/nodes-$p.conf" --daemonize yes \
                    --save "" --appendonly no --bind 127.0.0.1 --dir "$DIR/cluster/$p" >/dev/null
            fi
        done
        for p in $CLUSTER_PORTS; do wait_up "$p" "Redis Cluster node"; done
        fresh=yes
        for p in $CLUSTER_PORTS; do
            cluster_state "$p" cluster_known_nodes:1 && cluster_state "$p" cluster_slots_assigned:0 || fresh=no
        done
        if [ "$fresh" = no ]; then
            # Nodes restarted from their nodes files rejoin; wait for them first.
            for _ in $(seq 1 20); do cluster_ok && break; sleep 0.5; done
        fi
        if ! cluster_ok; then
            if [ "$fresh" = no ]; then
                for p in $CLUSTER_PORTS; do
                    redis-cli -p "$p" flushall >/dev/null 2>&1 || true
                    redis-cli -p "$p" cluster reset hard >/dev/null 2>&1 || true
                done
            fi
            # shellcheck disable=SC2046
            redis-cli --cluster create $(for p in $CLUSTER_PORTS; do printf '127.0.0.1:%s ' "$p"; done) \
                --cluster-replicas 0 --cluster-yes >/dev/null 2>&1 || true
        fi
        for _ in $(seq 1 120); do cluster_ok && break; sleep 0.5; done
        cluster_ok || { echo "private-servers: the Redis Cluster on $CLUSTER_PORTS is not ok" >&2; exit 1; }
    fi
    echo "redis+cluster://127.0.0.1:7100?nodes=127.0.0.1:7101,127.0.0.1:7102"
    ;;
memcached)
    if ! up "$MC_PORT"; then
        memcached -d -u root -l 127.0.0.1 -p "$MC_PORT"
        wait_up "$MC_PORT" memcached
    fi
    echo "memcache://127.0.0.1:$MC_PORT"
    ;;
stop)
    which="${2:-all}"
    if [ "$which" = all ] || [ "$which" = postgres ]; then
        bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
        if [ -n "$bin" ] && [ -f "$DIR/postgres/postmaster.pid" ]; then
            as_user postgres "$bin/pg_ctl" -D "$DIR/postgres" -m fast -w stop >/dev/null || true
        fi
    fi
    if [ "$which" = all ] || [ "$which" = mysql ]; then
        if up "$MY_PORT"; then
            mysqladmin -h127.0.0.1 -P"$MY_PORT" -uroot shutdown || true
            for _ in $(seq 1 300); do up "$MY_PORT" || break; sleep 0.1; done
        fi
    fi
    if [ "$which" = all ] || [ "$which" = redis ]; then
        up "$REDIS_PORT" && { redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true; }
    fi
    if [ "$which" = all ] || [ "$which" = redis-cluster ]; then
        for p in $CLUSTER_PORTS; do
            up "$p" && { redis-cli -p "$p" shutdown nosave >/dev/null 2>&1 || true; }
        done
    fi
    if [ "$which" = all ] || [ "$which" = memcached ]; then
        pkill -f "memcached -d -u root -l 127.0.0.1 -p $MC_PORT" || true
    fi
    ;;
*)
    echo "usage: $0 postgres|mysql|redis|redis-cluster|memcached|stop [KIND]" >&2
    exit 2
    ;;
esac
