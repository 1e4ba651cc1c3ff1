#!/usr/bin/env bash
# What a checkpoint costs in an S3 store, at two state sizes and one input
# rate: `presence bench` with --checkpoint-dir s3://BUCKET/PREFIX (a new
# prefix per run, in one new bucket). From each report: the checkpoints
# completed, and per checkpoint (the run's totals / checkpoints completed)
# the workers' piece bytes, the store's put bytes and its requests by
# operation; from each run's log ("checkpoint written ... pieces= bytes="):
# the median bytes a cut added to the chain of pieces, and the state's size
# (the last merged checkpoint, one piece); and the last checkpoint's size
# (presence_checkpoint_size_bytes: its chain of pieces, not the state).
#
#   PRESENCE_S3=http://127.0.0.1:PORT scripts/checkpoint_cost.sh OUT_DIR [DEVICES...]
#
# PRESENCE_S3 is an S3-compatible endpoint (`scripts/s3.sh PORT` starts moto
# and prints it); the bucket is made with an unsigned `curl -X PUT`, as moto
# takes it. Defaults: DEVICES 2000 20000; RATE=4000 records/s;
# INTERVALS="1s 10s" (checkpoint intervals, one run per size and interval);
# DURATION=40s runs (WARMUP=10s). Every phone keeps an open visit (--visit
# 120s --session-gap 60s: at 4000/s a phone of 20000 probes every 5 s on
# average), so the window state holds DEVICES keys, as in
# scripts/steady_checkpoints.sh. PRESENCE_BIN names the binary
# (target/release/presence).
#
# What to expect. A checkpoint's pieces hold the rows that changed since
# the previous one, one row per key, so their bytes follow the keys touched
# per interval, not the state. Phones are drawn at random, so an interval of
# I seconds at R records/s touches about D * (1 - exp(-R*I/D)) of D phones
# (printed as "phones touched"), never more than R*I, plus the visits that
# start and qualify (each phone moves on every 120 s: about D*I/120 of them).
# The state also keeps every walk-in, so it grows through the run.
#   - At 10 s, R*I = 40000 probes: nearly every phone of 2000 and of 20000
#     changes in every interval. There the changes *are* the state, and the
#     bytes per cut are far apart for both reasons: this interval alone
#     cannot tell the two apart.
#   - At 1 s, 4000 probes: about 1730 of 2000 phones (86% of the state) but
#     only 3630 of 20000 (18%). Bytes that track the changes are 2-3x apart
#     at 7-10x the state; bytes that tracked the state would be 7-10x apart.
# Merges: a checkpoint's chain of pieces is rewritten as one (a get of each
# piece and a put of the merged state) once the pieces after its first cut
# hold as many bytes as the first (about the state), or span more than
# MERGE_AFTER_CUTS (64) cuts, so that a restore stays proportional to the
# state. A merge is thus paid once per state's worth of changes: it at most
# doubles the put bytes per checkpoint, whatever the state's size ("piece
# bytes" leave it out, "put bytes" have it, and the manifests). Requests per
# checkpoint do not depend on the state: one
# put per worker's piece (-w 2) and one for the manifest, then pruning (a
# list, a get of each kept manifest, deletes of what fell out), plus a
# merge's gets and put now and then, and the run's start (a write check, a
# listing, the claim) spread over its checkpoints. A checkpoint with no
# changes (the first, and those after the generator stops) writes no piece
# but still a manifest, and prunes: it lowers the bytes per checkpoint and
# the put requests, not the gets.
set -euo pipefail
out="${1:?usage: PRESENCE_S3=http://HOST:PORT $0 OUT_DIR [DEVICES...]}"
shift
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(2000 20000)
rate="${RATE:-4000}"
intervals="${INTERVALS:-1s 10s}"
duration="${DURATION:-40s}"
warmup="${WARMUP:-10s}"
bin="${PRESENCE_BIN:-target/release/presence}"
endpoint="${PRESENCE_S3:?PRESENCE_S3 is the S3 endpoint, http://HOST:PORT (scripts/s3.sh PORT prints it)}"
endpoint="${endpoint%/}"
mkdir -p "$out"
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
export AWS_ENDPOINT_URL="$endpoint" AWS_ALLOW_HTTP=true
bucket="presence-ckcost-$$-$(date +%s)"
curl -sSf -X PUT "$endpoint/$bucket" -o /dev/null ||
    { echo "checkpoint_cost.sh: cannot create the bucket $bucket at $endpoint" >&2; exit 1; }
names=()
for interval in $intervals; do
    for devices in "${sizes[@]}"; do
        name="cost-d$devices-i$interval"
        "$bin" bench --rate "$rate" --duration "$duration" --warmup "$warmup" -w 2 --no-floor \
            --devices "$devices" --visit 120s --session-gap 60s --min-dwell 10s \
            --checkpoint-dir "s3://$bucket/$name" --checkpoint-interval "$interval" \
            --json "$out/$name.json" >"$out/$name.txt" 2>&1
        names+=("$name")
    done
done
python3 - "$out" "$rate" "${names[@]}" <<'PY'
import json, math, re, statistics, sys
out, rate, names = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def seconds(text):  # 500ms, 1s, 2m
    for unit, scale in (("ms", 0.001), ("s", 1), ("m", 60)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * scale
    return float(text)
written = re.compile(r"checkpoint written .*?pieces=(\d+) bytes=(\d+)")
def chain(name):
    """From the run's log: the median bytes a cut added to the chain of
    pieces (cuts that added pieces, merges left out), and the size of the
    last merged checkpoint (one piece: the state then), if any."""
    added, merged, last = [], None, None
    for line in open(f"{out}/{name}.txt", errors="replace"):
        m = written.search(line)
        if not m:
            continue
        pieces, size = int(m.group(1)), int(m.group(2))
        if last and pieces > last[0]:
            added.append(size - last[1])
        elif last and pieces < last[0]:
            merged = size
        last = (pieces, size)
    return (statistics.median(added) if added else None), merged
def num(x, fmt="{:.0f}"):
    return "-" if x is None else fmt.format(x)
notes = []
print(f"rate {rate}/s. Per checkpoint: the run's totals / checkpoints completed (an empty first one and")
print("the ones after the generator stopped, with nothing to write, included). Per cut: the median bytes")
print("a cut with changes added (from the log). State: the last merged checkpoint (one piece), if any.")
print("| interval | devices | phones touched per interval | checkpoints | achieved/s | piece bytes per checkpoint | piece bytes per cut (median) | put bytes per checkpoint | put req | get req | get bytes | list req | delete req | last checkpoint's pieces (bytes) | state (last merge, bytes) | per cut / state |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for name in names:
    d = json.load(open(f"{out}/{name}.json"))
    c = d["checkpoints"]
    per = c["store_per_checkpoint"]
    devices = d["config"]["devices"]
    interval = name.rsplit("-i", 1)[1]
    touched = devices * (1 - math.exp(-rate * seconds(interval) / devices))
    per_cut, state = chain(name)
    ratio = per_cut / state if per_cut and state else None
    print(f"| {interval} | {devices} | {touched:.0f} | {c['completed']} | {d['rate_achieved']:.0f} "
          f"| {c['bytes_per_checkpoint']:.0f} | {num(per_cut)} | {per['put']['bytes']:.0f} "
          f"| {per['put']['requests']:.2f} | {per['get']['requests']:.2f} | {per['get']['bytes']:.0f} "
          f"| {per['list']['requests']:.2f} | {per['delete']['requests']:.2f} "
          f"| {c['last_size_bytes']} | {num(state)} | {num(ratio, '{:.3f}')} |")
    errors = sum(v["errors"] for v in c["store"].values())
    if errors or c["failures"] or not d["sustainable"]:
        notes.append(f"{name}: {errors} store errors, {c['failures']} failed checkpoints, "
                     f"{'sustainable' if d['sustainable'] else 'NOT sustainable'}")
for note in notes:
    print(note)
PY
