#!/usr/bin/env bash
# Checks deploy/ (see deploy/README.md):
#   1. promtool check rules deploy/prometheus/alerts.yml
#   2. promtool test rules  deploy/prometheus/alerts_test.yml
#   3. deploy/grafana/presence.json is valid JSON (with jq or python3; neither is a failure)
#   4. every presence_* metric named in alerts.yml and presence.json is in the
#      metrics table of docs/operations.md (the rows between `<!-- metrics -->`
#      and the next blank line); a histogram's _bucket, _sum and _count series
#      count as the histogram.
# Installs Debian's prometheus package (which has /usr/bin/promtool) if
# promtool is missing; PROMTOOL=/path/to/promtool chooses another one. On a
# machine running systemd, installing the package also starts a Prometheus
# server (stop it with `systemctl disable --now prometheus`).
# Exits non-zero, with a line saying why, on the first failing step.
set -euo pipefail

cd "$(dirname "$0")/.."
RULES=deploy/prometheus/alerts.yml
TESTS=deploy/prometheus/alerts_test.yml
DASHBOARD=deploy/grafana/presence.json
DOC=docs/operations.md

fail() {
    echo "check_deploy: FAILED: $*" >&2
    exit 1
}

for f in "$RULES" "$TESTS" "$DASHBOARD" "$DOC"; do
    [ -f "$f" ] || fail "$f is missing"
done

# --- promtool -----------------------------------------------------------------
if [ -z "${PROMTOOL:-}" ]; then
    if command -v promtool >/dev/null 2>&1; then
        PROMTOOL=$(command -v promtool)
    elif [ -x /usr/bin/promtool ]; then
        PROMTOOL=/usr/bin/promtool
    else
        echo "check_deploy: promtool not found; installing Debian's prometheus package" >&2
        if [ "$(id -u)" -eq 0 ]; then
            SUDO=()
        elif command -v sudo >/dev/null 2>&1; then
            SUDO=(sudo)
        else
            fail "promtool is missing and installing it needs root (or sudo): apt-get install prometheus"
        fi
        command -v apt-get >/dev/null 2>&1 ||
            fail "promtool is missing and there is no apt-get: install Prometheus' promtool and set PROMTOOL"
        "${SUDO[@]}" apt-get update -qq ||
            fail "apt-get update failed"
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends prometheus ||
            fail "apt-get install prometheus failed"
        [ -x /usr/bin/promtool ] ||
            fail "the prometheus package is installed but /usr/bin/promtool is not there"
        PROMTOOL=/usr/bin/promtool
    fi
fi
[ -x "$PROMTOOL" ] || fail "PROMTOOL=$PROMTOOL is not an executable"
echo "== $("$PROMTOOL" --version 2>&1 | head -n 1)"

echo "== promtool check rules $RULES"
"$PROMTOOL" check rules "$RULES" || fail "promtool check rules $RULES"

echo "== promtool test rules $TESTS"
"$PROMTOOL" test rules "$TESTS" || fail "promtool test rules $TESTS"

# --- the dashboard is JSON ----------------------------------------------------
echo "== $DASHBOARD is JSON"
if command -v jq >/dev/null 2>&1; then
    jq empty "$DASHBOARD" || fail "$DASHBOARD is not valid JSON"
    echo "  SUCCESS (jq)"
elif command -v python3 >/dev/null 2>&1; then
    python3 -m json.tool "$DASHBOARD" >/dev/null || fail "$DASHBOARD is not valid JSON"
    echo "  SUCCESS (python3)"
else
    fail "neither jq nor python3 is installed: the dashboard cannot be checked"
fi

# --- metric names against docs/operations.md ---------------------------------
echo "== metric names in $RULES and $DASHBOARD against the table in $DOC"
# "name type" per row of the table, e.g. "presence_records_read_total counter".
table=$(awk '
    /^<!-- metrics -->[[:space:]]*$/ { inside = 1; next }
    inside && /^[[:space:]]*$/ { exit }
    inside { print }
' "$DOC" | sed -n 's/^| *`\(presence_[a-z_]*\)[^`]*` *| *\([a-z]*\) *|.*/\1 \2/p')
[ -n "$table" ] ||
    fail "no metrics table in $DOC (rows after a line <!-- metrics --> up to the next blank line)"

declare -A documented=()
while read -r name type; do
    documented[$name]=$type
done <<<"$table"

used=$(grep -oh 'presence_[a-z_]\+' "$RULES" "$DASHBOARD" | sort -u)
unknown=()
declare -A covered=()
for name in $used; do
    if [ -n "${documented[$name]:-}" ]; then
        covered[$name]=1
        continue
    fi
    base=$(sed -E 's/_(bucket|sum|count)$//' <<<"$name")
    if [ "$base" != "$name" ] && [ "${documented[$base]:-}" = histogram ]; then
        covered[$base]=1
        continue
    fi
    where=$(grep -l "\b$name\b" "$RULES" "$DASHBOARD" | tr '\n' ' ')
    unknown+=("$name (in ${where% })")
done

echo "  $(wc -w <<<"$used") names in use, ${#documented[@]} metric families in the table"
unused=()
for name in "${!documented[@]}"; do
    [ -n "${covered[$name]:-}" ] || unused+=("$name")
done
if [ ${#unused[@]} -gt 0 ]; then
    echo "  note: in the table but in neither file: $(printf '%s\n' "${unused[@]}" | sort | tr '\n' ' ')"
fi
if [ ${#unknown[@]} -gt 0 ]; then
    printf '  not in the table: %s\n' "${unknown[@]}" >&2
    fail "${#unknown[@]} metric name(s) used in deploy/ are not in the metrics table of $DOC"
fi
echo "  SUCCESS: every metric name is in the table"
echo "check_deploy: all checks passed"
