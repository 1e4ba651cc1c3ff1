#!/usr/bin/env bash
# A Kafka-compatible broker behind TLS, on loopback, for the TLS test
# (tests/tls.rs): makes a CA and a certificate for 127.0.0.1 with openssl,
# starts tansu on a plaintext port that advertises the TLS port, and stunnel
# terminating TLS on that port in front of it. Every client must then speak
# TLS: the broker's metadata names only the TLS port.
#   scripts/tls.sh DIR [TLS_PORT] [PLAIN_PORT]   (defaults 19393, 19392)
# Prints "127.0.0.1:TLS_PORT DIR/ca.pem"; the processes' ids are in DIR/pids
# (stop them with: kill $(cat DIR/pids)). Needs tansu (scripts/tansu.sh
# installs it), stunnel4 and openssl (Debian).
set -euo pipefail
dir="$1"
tls_port="${2:-19393}"
plain_port="${3:-19392}"
mkdir -p "$dir"
cd "$dir"
command -v tansu >/dev/null || { echo "tls.sh: tansu is missing (scripts/tansu.sh installs it)" >&2; exit 1; }
stunnel_bin="$(command -v stunnel4 || command -v stunnel || true)"
[ -n "$stunnel_bin" ] || { echo "tls.sh: stunnel is missing (apt-get install stunnel4)" >&2; exit 1; }

# A CA of the test's own, and the broker's certificate signed by it.
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=presence test CA" \
    -keyout ca.key -out ca.pem 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
    -keyout server.key -out server.csr 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
    -extfile server.ext -out server.pem 2>/dev/null

tansu broker \
    --listener-url "tcp://127.0.0.1:$plain_port" \
    --advertised-listener-url "tcp://127.0.0.1:$tls_port" \
    --storage-engine memory://tansu/ >tansu.log 2>&1 &
echo $! >pids
cat >stunnel.conf <<EOF
foreground = yes
pid =
[kafka]
accept = 127.0.0.1:$tls_port
connect = 127.0.0.1:$plain_port
cert = $PWD/server.pem
key = $PWD/server.key
EOF
"$stunnel_bin" stunnel.conf >stunnel.log 2>&1 &
echo $! >>pids

# Ready when both accept connections (bounded: 30 s).
for _ in $(seq 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$plain_port") 2>/dev/null &&
        (exec 3<>"/dev/tcp/127.0.0.1/$tls_port") 2>/dev/null; then
        echo "127.0.0.1:$tls_port $PWD/ca.pem"
        exit 0
    fi
    for pid in $(cat pids); do
        kill -0 "$pid" 2>/dev/null || { cat tansu.log stunnel.log >&2; exit 1; }
    done
    sleep 0.1
done
echo "tls.sh: the broker did not start; see $dir/tansu.log and $dir/stunnel.log" >&2
exit 1
