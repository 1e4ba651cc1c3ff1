#!/usr/bin/env bash
# A Kafka-compatible broker that requires SASL/SCRAM-SHA-512, on loopback,
# for the SASL test (tests/tls.rs): tansu with sqlite storage in DIR, started
# once without authentication to create the user, then again with
# --authentication (tansu's own tools cannot authenticate, so the user must
# exist first; clients then create topics over SASL).
#   scripts/sasl.sh DIR [PORT] [USER] [PASSWORD]   (defaults 19492, presence, a random password)
# Prints "127.0.0.1:PORT USER PASSWORD"; the broker's id is in DIR/pids.
set -euo pipefail
dir="$1"
port="${2:-19492}"
user="${3:-presence}"
password="${4:-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')}"
mkdir -p "$dir"
cd "$dir"
command -v tansu >/dev/null || { echo "sasl.sh: tansu is missing (scripts/tansu.sh installs it)" >&2; exit 1; }

start() {
    tansu broker \
        --listener-url "tcp://127.0.0.1:$port" \
        --advertised-listener-url "tcp://127.0.0.1:$port" \
        --storage-engine sqlite://tansu.db "$@" >>tansu.log 2>&1 &
    echo $! >pids
    for _ in $(seq 300); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        kill -0 "$(cat pids)" 2>/dev/null || { cat tansu.log >&2; exit 1; }
        sleep 0.1
    done
    echo "sasl.sh: tansu did not start; see $dir/tansu.log" >&2
    exit 1
}

start
timeout 60 tansu user create --broker "tcp://127.0.0.1:$port" --mechanism scram512 "$user" "$password" >>tansu.log 2>&1 ||
    { echo "sasl.sh: creating the user failed or took over 60 s; see $dir/tansu.log" >&2; kill "$(cat pids)"; exit 1; }
kill "$(cat pids)"
# Stopped within 30 s, or killed.
for _ in $(seq 300); do
    kill -0 "$(cat pids)" 2>/dev/null || break
    sleep 0.1
done
if kill -0 "$(cat pids)" 2>/dev/null; then
    echo "sasl.sh: tansu did not stop within 30 s after creating the user; killing it" >&2
    kill -9 "$(cat pids)" 2>/dev/null || true
    sleep 0.5
fi
start --authentication
echo "127.0.0.1:$port $user $password"
