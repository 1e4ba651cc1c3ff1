#!/usr/bin/env bash
# Starts tansu, a Kafka-compatible broker, on loopback with in-memory storage,
# installing it first if needed (cargo install: about 10 minutes on 2 cores).
# Prints the bootstrap address; stop it with: kill "$(cat "$PIDFILE")".
#   scripts/tansu.sh [PORT]   (default 19092; PIDFILE defaults to /tmp/presence-tansu.pid)
set -euo pipefail
port="${1:-19092}"
pidfile="${PIDFILE:-/tmp/presence-tansu.pid}"
if ! command -v tansu >/dev/null 2>&1; then
    echo "installing tansu (cargo install tansu --locked --features dynostore,libsql)..." >&2
    cargo install tansu --locked --features dynostore,libsql >&2
fi
log="${TMPDIR:-/tmp}/presence-tansu-$port.log"
tansu broker \
    --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine memory://tansu/ >"$log" 2>&1 &
echo $! >"$pidfile"
# Ready when it accepts connections (bounded: 30 s).
for _ in $(seq 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "127.0.0.1:$port"
        exit 0
    fi
    kill -0 "$(cat "$pidfile")" 2>/dev/null || { cat "$log" >&2; exit 1; }
    sleep 0.1
done
echo "tansu did not start listening on 127.0.0.1:$port; see $log" >&2
exit 1
