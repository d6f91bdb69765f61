#!/usr/bin/env bash
# CPU used by an idle `runall work` worker and by the server it polls, over SECONDS.
# usage: scripts/idle_cpu.sh URL SERVER_PROCESS_NAME [SECONDS]
#   e.g. scripts/idle_cpu.sh mysql://root@127.0.0.1:3306/test mariadbd 30
set -euo pipefail
url=$1 server=$2 secs=${3:-30}
runall=${RUNALL:-target/release/runall}
tick=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
config=$(mktemp --suffix=.toml)
trap 'rm -f "$config"' EXIT
printf 'url = "%s"\ntable = "idle_cpu"\nfailed_table = "idle_cpu_failed"\nlogging = false\n' "$url" >"$config"
"$runall" --config "$config" work --queue idle-cpu ${IDLE_ARGS:-} >/dev/null 2>&1 &
worker=$!
sleep 3
spid=$(pgrep -o -x "$server")
w0=$(cpu $worker) s0=$(cpu "$spid")
sleep "$secs"
w1=$(cpu $worker) s1=$(cpu "$spid")
kill -TERM $worker; wait $worker || true
awk -v w=$((w1 - w0)) -v s=$((s1 - s0)) -v t="$tick" -v secs="$secs" 'BEGIN {
  printf "idle worker: %.2f %% of one core; server: %.2f %% of one core (over %d s)\n", 100*w/t/secs, 100*s/t/secs, secs }'
