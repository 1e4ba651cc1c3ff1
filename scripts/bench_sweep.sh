#!/usr/bin/env bash
# Sweeps `presence bench` over offered rate, workers, processes, broker and
# state size; writes one JSON and one CSV per point into OUT, all.csv with
# every row, and max-rate.txt with the highest sustainable rate per
# configuration. Then: scripts/plot_bench.py --out OUT OUT/*.json
#
#   scripts/bench_sweep.sh [OUT]            (default: bench-results/DATE)
#
# Environment:
#   SWEEPS     which sweeps, default "rate devices tansu"
#                rate:    in-process broker, -w 1 and -w 2, rate doubling
#                devices: in-process broker, -w 2, 8000/s, 1k/10k/100k devices
#                tansu:   tansu on loopback, -n 1 -w 2 and -n 2 -w 1, rate doubling
#   DURATION   per point, default 20s; WARMUP default 5s
#   START_RATE default 1000; MAX_RATE default 1024000 (doubling stops at the
#              first unsustainable point, which is kept)
#   TANSU      address of a running broker for the tansu sweep (default:
#              scripts/tansu.sh starts one on 127.0.0.1:19292)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-bench-results/$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$out"
sweeps="${SWEEPS:-rate devices tansu}"
duration="${DURATION:-20s}"
warmup="${WARMUP:-5s}"
start_rate="${START_RATE:-1000}"
max_rate="${MAX_RATE:-1024000}"

cargo build --release --quiet
bin=target/release/presence

sustainable() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["sustainable"])' "$1"; }

# point NAME ARGS...: one point in one process.
point() {
    local name="$1"; shift
    echo "== $name: $*" >&2
    "$bin" bench --duration "$duration" --warmup "$warmup" "$@" \
        --json "$out/$name.json" --csv "$out/$name.csv"
}

# point2 NAME ARGS...: one point as two processes of one -w 1 cluster.
point2() {
    local name="$1"; shift
    echo "== $name (two processes): $*" >&2
    local hosts="$out/hosts"
    local p0 p1
    p0=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    p1=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    printf '127.0.0.1:%s\n127.0.0.1:%s\n' "$p0" "$p1" >"$hosts"
    local prefix="$name-$$-"
    "$bin" bench --duration "$duration" --warmup "$warmup" "$@" --prefix "$prefix" \
        -w 1 -n 2 -p 1 -h "$hosts" 2>"$out/$name.p1.log" &
    local other=$!
    "$bin" bench --duration "$duration" --warmup "$warmup" "$@" --prefix "$prefix" \
        -w 1 -n 2 -p 0 -h "$hosts" --json "$out/$name.json" --csv "$out/$name.csv"
    wait "$other"
}

# doubling RUNNER TAG ARGS...: rates from START_RATE, doubling while sustainable.
doubling() {
    local runner="$1" tag="$2"; shift 2
    local rate="$start_rate"
    while [ "$rate" -le "$max_rate" ]; do
        "$runner" "$tag-r$rate" --rate "$rate" "$@"
        [ "$(sustainable "$out/$tag-r$rate.json")" = True ] || break
        rate=$((rate * 2))
    done
}

for sweep in $sweeps; do
    case "$sweep" in
    rate)
        doubling point w1-inproc -w 1
        doubling point w2-inproc -w 2
        ;;
    devices)
        # State: one open visit per device. A device probes every
        # devices/rate seconds; the session gap, dwell and visit length are
        # scaled to it (2 probes a visit) so that visits form and qualify
        # within 40 s: librdkafka's in-process broker slows down after about
        # 45 s at this rate, which would be measured instead. No floor: it
        # does not depend on the devices (the rate sweep has it).
        rate=8000 saved="$duration $warmup"
        duration=40s warmup=20s
        for devices in 1000 10000 100000; do
            interval=$((devices * 1000 / rate))
            gap=$((interval * 3 > 2000 ? interval * 3 : 2000))
            dwell=$((interval > 1000 ? interval : 1000))
            visit=$((interval * 10 > 5000 ? interval * 10 : 5000))
            point "w2-inproc-d$devices" -w 2 --rate "$rate" --devices "$devices" --no-floor \
                --session-gap "$gap" --min-dwell "$dwell" --min-probes 2 --visit "$visit"
        done
        read -r duration warmup <<<"$saved"
        ;;
    tansu)
        brokers="${TANSU:-}"
        if [ -z "$brokers" ]; then
            export PIDFILE="$out/tansu.pid"
            brokers=$(scripts/tansu.sh 19292)
            trap 'kill "$(cat "$PIDFILE")" 2>/dev/null || true' EXIT
        fi
        doubling point w2n1-tansu -w 2 --brokers "$brokers"
        doubling point2 w1n2-tansu --brokers "$brokers"
        ;;
    *) echo "unknown sweep $sweep" >&2; exit 2 ;;
    esac
done

# Every row in one CSV; the highest sustainable rate per configuration.
first=$(ls "$out"/*.csv | grep -v '/all.csv$' | head -1)
{ head -1 "$first"; for f in "$out"/*.csv; do [ "$f" = "$out/all.csv" ] || tail -n +2 "$f"; done; } >"$out/all.csv"
python3 - "$out" <<'EOF' | tee "$out/max-rate.txt"
import json, pathlib, sys
best = {}
for path in sorted(pathlib.Path(sys.argv[1]).glob("*.json")):
    r = json.loads(path.read_text())
    c = r["config"]
    key = f'-w {c["workers"]} -n {c["processes"]}, {c["broker"]}, {c["devices"]} devices'
    if r["sustainable"]:
        best[key] = max(best.get(key, 0), r["rate_offered"])
    else:
        best.setdefault(key, 0)
for key, rate in sorted(best.items()):
    print(f"{key}: max sustainable {rate}/s" if rate else f"{key}: none sustainable")
EOF
