#!/usr/bin/env bash
# Makes sure every backend the tests use is up on 127.0.0.1: PostgreSQL 5432, MariaDB 3306,
# Redis 6379, a 3-master Redis Cluster 7000-7002, memcached 11211 (installed from Debian's
# packages if missing), and Chromium with ChromeDriver for the dashboard's browser test.
# In CI (CI=true) a backend that cannot be started is an error; elsewhere a warning, and that
# driver's tests print "skipped: no server at URL".
set -u

ci=false
case "${CI:-}" in true|1) ci=true ;; esac
status=0

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # name port
  for _ in $(seq 1 60); do
    port_open "$2" && return 0
    sleep 0.5
  done
  return 1
}

problem() {
  if $ci; then echo "services: ERROR: $*" >&2; status=1; else echo "services: warning: $*" >&2; fi
}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else "$@"; fi; }

# PostgreSQL
if ! port_open 5432; then
  if ls /etc/postgresql >/dev/null 2>&1; then
    as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start >/dev/null 2>&1 || true
  fi
  wait_port postgres 5432 || problem "PostgreSQL is not running on 127.0.0.1:5432"
fi

# MariaDB
if ! port_open 3306; then
  if [ -x /usr/sbin/mariadbd ]; then
    as_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd >/dev/null 2>&1 || true
  fi
  wait_port mariadb 3306 || problem "MariaDB is not running on 127.0.0.1:3306"
fi

# Redis
if ! port_open 6379; then
  if command -v redis-server >/dev/null; then
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null 2>&1 || true
  fi
  wait_port redis 6379 || problem "Redis is not running on 127.0.0.1:6379"
fi

# Redis Cluster: three masters on 127.0.0.1:7000-7002, no replicas (the redis driver's
# cluster tests, REDIS_CLUSTER_URL). Left alone when it is already up and ok. Nodes that are
# down are started; a restarted node rejoins from its nodes file; fresh nodes are joined
# with `redis-cli --cluster create`. A test cluster that stays broken (its nodes files lost)
# is emptied and created again: it holds nothing but test keys.
cluster_ports="7000 7001 7002"
cluster_dir=${REDIS_CLUSTER_DIR:-/tmp/queue-redis-cluster}
cluster_info() { redis-cli -p "$1" cluster info 2>/dev/null; }
cluster_ok() {
  for p in $cluster_ports; do cluster_info "$p" | grep -q '^cluster_state:ok' || return 1; done
}
cluster_wait_ok() { # tries (half seconds)
  for _ in $(seq 1 "$1"); do cluster_ok && return 0; sleep 0.5; done
  return 1
}
cluster_fresh() { # every node alone and without slots
  for p in $cluster_ports; do
    cluster_info "$p" | grep -q '^cluster_known_nodes:1' || return 1
    cluster_info "$p" | grep -q '^cluster_slots_assigned:0' || return 1
  done
}
cluster_create() {
  # shellcheck disable=SC2046
  redis-cli --cluster create $(for p in $cluster_ports; do printf '127.0.0.1:%s ' "$p"; done) \
    --cluster-replicas 0 --cluster-yes >/dev/null 2>&1
}
if ! cluster_ok; then
  if command -v redis-server >/dev/null && command -v redis-cli >/dev/null; then
    for p in $cluster_ports; do
      if ! port_open "$p"; then
        mkdir -p "$cluster_dir/$p"
        redis-server --port "$p" --cluster-enabled yes --cluster-config-file "$cluster_dir/$p/nodes-$p.conf" \
          --daemonize yes --save "" --appendonly no --bind 127.0.0.1 --dir "$cluster_dir/$p" >/dev/null 2>&1 || true
      fi
    done
    for p in $cluster_ports; do wait_port "redis cluster node" "$p" || true; done
    if cluster_fresh; then
      cluster_create || true
    elif ! cluster_wait_ok 20; then
      for p in $cluster_ports; do
        redis-cli -p "$p" flushall >/dev/null 2>&1 || true
        redis-cli -p "$p" cluster reset hard >/dev/null 2>&1 || true
      done
      cluster_create || true
    fi
    cluster_wait_ok 60 || true
  fi
  cluster_ok || problem "Redis Cluster is not up and ok on 127.0.0.1:7000-7002 (redis-server --cluster-enabled yes; redis-cli --cluster create)"
fi

# memcached
if ! command -v memcached >/dev/null; then
  echo "services: installing memcached" >&2
  (as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq memcached) >/dev/null 2>&1 \
    || problem "could not install memcached (apt-get install -y memcached)"
fi
if ! port_open 11211 && command -v memcached >/dev/null; then
  # 1 GB: with the 64 MB default, leftovers of earlier test runs fill it and it evicts jobs.
  memcached -d -u root -m 1024 -l 127.0.0.1 -p 11211 >/dev/null 2>&1 || true
  wait_port memcached 11211 || problem "memcached is not running on 127.0.0.1:11211"
fi

# Chromium and ChromeDriver: the dashboard's real-browser test (queue-core/dashboard/tests/browser.rs)
# drives headless Chromium through chromedriver.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  echo "services: installing chromium and chromium-driver" >&2
  (as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) >/dev/null 2>&1 \
    || problem "could not install chromium and chromium-driver (apt-get install -y chromium chromium-driver)"
fi

# Tools the deploy/ tests use to check the deployment files: supervisor (runs the
# Supervisor config for real), docker-compose (validates the compose file; no engine needed)
# and promtool, of Debian's prometheus (checks the scrape config and the alert rules).
for tool in supervisord:supervisor docker-compose:docker-compose promtool:prometheus; do
  bin=${tool%%:*}; pkg=${tool##*:}
  if ! command -v "$bin" >/dev/null; then
    echo "services: installing $pkg" >&2
    (as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg") >/dev/null 2>&1 \
      || problem "could not install $pkg (apt-get install -y $pkg)"
  fi
done

exit $status
