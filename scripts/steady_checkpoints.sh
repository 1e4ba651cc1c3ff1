#!/usr/bin/env bash
# What checkpoints cost a running service: `presence bench` at one fixed rate,
# alternately without and with --checkpoint-dir, ROUNDS times each, so that
# run-to-run noise shows next to the difference. Prints each run's p99s and
# the median of each side, and the ratios of the medians.
#
#   scripts/steady_checkpoints.sh OUT_DIR [ROUNDS] [DEVICES] [RATE]
#
# Defaults: 3 rounds, 2000 phones, 4000 records/s, 40 s runs (10 s warm-up),
# checkpoints every 10 s. Every phone keeps an open visit (--visit 120s
# --session-gap 60s), so the window state holds DEVICES keys.
set -euo pipefail
out="${1:?usage: $0 OUT_DIR [ROUNDS] [DEVICES] [RATE]}"
rounds="${2:-3}"
devices="${3:-2000}"
rate="${4:-4000}"
bin="${PRESENCE_BIN:-target/release/presence}"
mkdir -p "$out"
state="$(mktemp -d)"
trap 'rm -rf "$state"' EXIT
for round in $(seq 1 "$rounds"); do
    for side in no yes; do
        extra=()
        if [ "$side" = yes ]; then
            extra=(--checkpoint-dir "$state" --checkpoint-interval 10s)
        fi
        name="$out/steady-d$devices-ck$side-$round"
        "$bin" bench --rate "$rate" --duration 40s --warmup 10s -w 2 --no-floor \
            --devices "$devices" --visit 120s --session-gap 60s --min-dwell 10s \
            --json "$name.json" "${extra[@]}" > "$name.txt" 2>&1
    done
done
python3 - "$out" "$devices" "$rounds" <<'PY'
import json, statistics, sys
out, devices, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
rows = {"no": [], "yes": []}
print(f"| round | checkpoints | achieved/s | dataflow p99 ms | e2e p50 ms | e2e p99 ms | bytes/checkpoint |")
print("|---:|---|---:|---:|---:|---:|---:|")
for r in range(1, rounds + 1):
    for side in ("no", "yes"):
        d = json.load(open(f"{out}/steady-d{devices}-ck{side}-{r}.json"))
        lat = d["latency_ms"]
        ck = d.get("checkpoints") or {}
        row = (d["rate_achieved"], lat["dataflow"]["p99"], lat["e2e"]["p50"], lat["e2e"]["p99"])
        rows[side].append(row)
        bytes_ = f'{ck.get("bytes_per_checkpoint", 0):.0f}' if ck else ""
        print(f"| {r} | {side} | {row[0]:.0f} | {row[1]:.2f} | {row[2]:.1f} | {row[3]:.1f} | {bytes_} |")
med = {s: [statistics.median(x[i] for x in rows[s]) for i in range(4)] for s in rows}
print()
print(f"median without: dataflow p99 {med['no'][1]:.2f} ms, e2e p99 {med['no'][3]:.1f} ms")
print(f"median with:    dataflow p99 {med['yes'][1]:.2f} ms, e2e p99 {med['yes'][3]:.1f} ms")
print(f"with / without: dataflow p99 {med['yes'][1]/med['no'][1]:.2f}x, e2e p99 {med['yes'][3]/med['no'][3]:.2f}x")
PY
