#!/usr/bin/env bash
# Connection churn check of the performance issue: runs `bench` several times in a row on
# PostgreSQL and MariaDB and prints, per run, the end-to-end figures and how many server
# sessions were opened and abandoned during it (PostgreSQL: pg_stat_database.sessions and
# sessions_abandoned; MariaDB: the Connections and Aborted_connects status counters).
#
#   bash scripts/bench_sessions.sh target/release/bench 5
#
# A pool that keeps its connections opens a handful per run and abandons none.
set -euo pipefail
bench="${1:-target/release/bench}"
runs="${2:-5}"
pg_url="${POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
my_url="${MYSQL_URL:-mysql://root@127.0.0.1:3306/test}"

pg_counts() {
    psql -h 127.0.0.1 -U postgres -d test -Atc \
        "select sessions || ' ' || sessions_abandoned from pg_stat_database where datname = 'test'"
}
my_counts() {
    mysql -h127.0.0.1 -uroot -N -e \
        "show global status where Variable_name in ('Connections', 'Aborted_connects')" |
        awk '{v[$1] = $2} END {print v["Connections"], v["Aborted_connects"]}'
}

for driver in postgres mysql; do
    for run in $(seq 1 "$runs"); do
        if [ "$driver" = postgres ]; then url="$pg_url"; before=$(pg_counts); else url="$my_url"; before=$(my_counts); fi
        row=$("$bench" --url "$url" --jobs 20000 --samples 50 | grep "^| $driver")
        if [ "$driver" = postgres ]; then after=$(pg_counts); else after=$(my_counts); fi
        read -r s0 a0 <<<"$before"
        read -r s1 a1 <<<"$after"
        echo "$driver run $run: sessions opened $((s1 - s0)), abandoned $((a1 - a0)) $row"
    done
done
