#!/usr/bin/env bash
# Starts moto, an S3-compatible server, on loopback with in-memory storage,
# installing it first if needed (python3 -m pip install 'moto[server]').
# Prints its endpoint, http://127.0.0.1:PORT, and nothing else on stdout (logs
# go to stderr); writes its pid to "$PIDFILE" if PIDFILE is set. Stop it with:
# kill "$(cat "$PIDFILE")".
#   scripts/s3.sh PORT
# The checkpoint tests take the endpoint and the pid from the environment:
#   export PRESENCE_S3="$(PIDFILE=/tmp/s3.pid scripts/s3.sh 19910)"
#   export PRESENCE_S3_PID="$(cat /tmp/s3.pid)"
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: scripts/s3.sh PORT" >&2; exit 1; }
port="$1"
case "$port" in
    '' | *[!0-9]*) echo "s3.sh: PORT must be a number, not '$port'" >&2; exit 1 ;;
esac
# Whether something answers HTTP on the port (any status; at most 1 s).
answers() {
    (
        exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
        printf 'HEAD / HTTP/1.0\r\nHost: 127.0.0.1:%s\r\n\r\n' "$port" >&3
        IFS= read -r -t 1 status <&3 && [[ "$status" == HTTP/* ]]
    ) 2>/dev/null
}
# Something already listening there would be taken for this server.
if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "s3.sh: 127.0.0.1:$port is already in use" >&2
    exit 1
fi
server=(moto_server)
if ! command -v moto_server >/dev/null 2>&1; then
    command -v python3 >/dev/null 2>&1 || { echo "s3.sh: moto_server is missing and so is python3 to install it" >&2; exit 1; }
    echo "s3.sh: installing moto (python3 -m pip install --quiet 'moto[server]')..." >&2
    python3 -m pip install --quiet 'moto[server]' >&2 ||
        { echo "s3.sh: installing moto failed (an externally managed python3 needs a venv: python3 -m venv DIR && DIR/bin/pip install 'moto[server]', then DIR/bin on PATH)" >&2; exit 1; }
    # The entry point may land outside PATH (user site, pyenv without rehash).
    command -v moto_server >/dev/null 2>&1 || server=(python3 -m moto.server)
fi
log="$(mktemp -d "${TMPDIR:-/tmp}/presence-s3-$port.XXXXXX")/moto.log"
# Detached from this script's stdout and stderr, so that $(scripts/s3.sh)
# returns once the server is up.
"${server[@]}" -H 127.0.0.1 -p "$port" </dev/null >"$log" 2>&1 &
pid=$!
if [ -n "${PIDFILE:-}" ]; then
    echo "$pid" >"$PIDFILE"
fi
# Ready when it answers HTTP (bounded: 30 s).
deadline=$((SECONDS + 30))
while ((SECONDS < deadline)); do
    if answers; then
        echo "http://127.0.0.1:$port"
        exit 0
    fi
    kill -0 "$pid" 2>/dev/null || { echo "s3.sh: moto_server exited; its log ($log):" >&2; tail -n 20 "$log" >&2; exit 1; }
    sleep 0.1
done
echo "s3.sh: moto_server did not answer on 127.0.0.1:$port within 30 s; its log ($log) ends:" >&2
tail -n 20 "$log" >&2
kill "$pid" 2>/dev/null || true
exit 1
