#!/usr/bin/env bash
# bolide's benchmark matrix, driven by bolide-bench (see man/bolide-bench.1).
#
#   bench/run.sh            the null broker, then bolide            (make bench)
#   bench/run.sh compare    the null broker, bolide and Comet 3.1.0 (make bench-compare)
#
# Every row starts a fresh broker on 127.0.0.1 with kernel-chosen ports and a fresh
# event database, runs one bolide-bench command with --pid, keeps the JSON line in
# $BENCH_OUT/<broker>-<row>.json (full output in .log), and stops the broker. The ingest
# rows run first, BENCH_INGEST_RUNS times per broker in alternation (<broker>-<row>.N.json);
# the table shows each broker's median run and lists every run's rate.
#
# Broker kinds: `null` is `bolide-bench null-broker`, a broker that only moves bytes
# (no parsing, validation, database or filters): the machine's floor, the cost of the
# sockets alone; it runs every row but ingest-sync and filter (ingest-sync and
# filter need a database or filters; its cells there show "-"). Each row runs on the null
# broker, then bolide, then with `compare` `comet`, one after the other. After the table
# come the ratios bolide / floor and, with `compare`, bolide vs Comet.
#
# Environment (defaults in brackets):
#   BENCH_OUT            where results go [target/bench]
#   BENCH_AUTHORS        ingest authors [16]
#   BENCH_INGEST_SECONDS ingest duration [10]
#   BENCH_SUBSCRIBERS    subscribers of the fanout and filter rows [1000]
#   BENCH_PACED_COUNT    events of the paced fanout row [40]
#   BENCH_PACED_RATE     events/s of the paced rows [2]
#   BENCH_B2B_COUNT      events of the back-to-back fanout row [300]
#   BENCH_FILTER_COUNT   events of the filter row [40]
#   BENCH_WIDE_COUNT     events of the fanout-5k and fanout-10k rows (5 000 and 10 000
#                        subscribers; Comet skips fanout-10k) [10]
#   BENCH_WIDE_RATE      events/s of those rows [1]
#   BENCH_MAX_SECONDS    bolide-bench --max-seconds per row [120]
#   BENCH_INGEST_RUNS    runs of each ingest row per broker, alternated; the median is shown [3]
#   BENCH_ROWS           rows to run [ingest-sync ingest-nosync fanout-paced fanout-b2b filter
#                        fanout-5k fanout-10k]
#   BENCH_KINDS          brokers to run, in this order [null bolide, then comet with compare];
#                        `noarchive` is bolide with --no-archive, and then the table is
#                        followed by the archive's cost (bolide / noarchive)
#   BENCH_BOLIDE         the bolide binary [./target/release/bolide]
#   BOLIDE_INTEROP_VENV  Comet's venv (compare; made by tests/interop/setup.sh)
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"

out="${BENCH_OUT:-target/bench}"
authors="${BENCH_AUTHORS:-16}"
ingest_s="${BENCH_INGEST_SECONDS:-10}"
subs="${BENCH_SUBSCRIBERS:-1000}"
paced_count="${BENCH_PACED_COUNT:-40}"
paced_rate="${BENCH_PACED_RATE:-2}"
b2b_count="${BENCH_B2B_COUNT:-300}"
filter_count="${BENCH_FILTER_COUNT:-40}"
wide_count="${BENCH_WIDE_COUNT:-10}"
wide_rate="${BENCH_WIDE_RATE:-1}"
max_s="${BENCH_MAX_SECONDS:-120}"
ingest_runs="${BENCH_INGEST_RUNS:-3}"
rows=(${BENCH_ROWS:-ingest-sync ingest-nosync fanout-paced fanout-b2b filter fanout-5k fanout-10k})
compare=0
[ "${1:-}" = compare ] && compare=1

bolide="${BENCH_BOLIDE:-./target/release/bolide}"
bench=./target/release/bolide-bench
[ -x "$bolide" ] && [ -x "$bench" ] || { echo "build first: cargo build --release" >&2; exit 2; }
if ! command -v jq >/dev/null; then
  echo "installing jq (needed to read bolide-bench's JSON)" >&2
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq jq >/dev/null; } ||
    { echo "tests/bench/run.sh needs jq" >&2; exit 2; }
fi
# Every subscriber is a descriptor in the broker and in bolide-bench (which raises its own
# limit, as bolide does; the null broker and Comet inherit this one).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
mkdir -p "$out"
tmp="$(mktemp -d "${TMPDIR:-/tmp}/bolide-bench.XXXXXX")"
broker_pid=
cleanup() {
  [ -n "$broker_pid" ] && kill "$broker_pid" 2>/dev/null && wait "$broker_pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

venv=
if [ $compare = 1 ]; then
  venv="$(tests/interop/setup.sh)" || { echo "$venv" >&2; exit 2; }
  echo "Comet venv: $venv"
fi

# start_broker KIND ROW -> sets broker_pid, rport, bport
start_broker() {
  local kind=$1 row=$2 log="$tmp/$1-$2.broker.log" db="$tmp/$1-$2.eventdb"
  rm -rf "$db"
  rport= bport=
  if [ "$kind" = bolide ] || [ "$kind" = noarchive ] || [ "$kind" = null ]; then
    if [ "$kind" = null ]; then
      "$bench" null-broker --receive-port=0 --broadcast-port=0 2>"$log" >/dev/null &
    else
      local extra=()
      [ "$row" = ingest-nosync ] && extra+=(--no-sync)
      [ "$kind" = noarchive ] && extra+=(--no-archive)
      RUST_LOG=warn,bolide::broker=info "$bolide" -r -b --local-ivo=ivo://bolide.bench/broker \
        --max-connections=30000 --max-subscribers-per-address=20000 --max-authors-per-address=4000 \
        --eventdb="$db" -q --receive-port=0 --broadcast-port=0 --broadcast-test-interval=0 \
        "${extra[@]}" 2>"$log" >/dev/null &
    fi
    broker_pid=$!
    # Both print "listening for authors on ADDR:PORT (...)", and the same for subscribers.
    for _ in $(seq 200); do
      rport=$(sed -n 's/.*listening for authors on .*:\([0-9]*\) (.*/\1/p' "$log" | head -1)
      bport=$(sed -n 's/.*listening for subscribers on .*:\([0-9]*\) (.*/\1/p' "$log" | head -1)
      [ -n "$rport" ] && [ -n "$bport" ] && return 0
      kill -0 "$broker_pid" 2>/dev/null || break
      sleep 0.05
    done
  else
    (cd "$tmp" && PYTHONUTF8=1 exec "$venv/bin/twistd" -n --pidfile= --logfile=- comet -q \
      --receive --broadcast --local-ivo=ivo://bolide.bench/comet \
      --receive-port=0 --broadcast-port=0 --eventdb="$db" \
      --author-whitelist=127.0.0.1/32 --subscriber-whitelist=127.0.0.1/32 \
      --broadcast-test-interval=0 >"$log" 2>&1) &
    broker_pid=$!
    for _ in $(seq 200); do
      rport=$(sed -n 's/.*VOEventReceiverFactory.* starting on \([0-9]*\).*/\1/p' "$log" | head -1)
      bport=$(sed -n 's/.*VOEventBroadcasterFactory.* starting on \([0-9]*\).*/\1/p' "$log" | head -1)
      [ -n "$rport" ] && [ -n "$bport" ] && { sleep 0.3; return 0; }
      kill -0 "$broker_pid" 2>/dev/null || break
      sleep 0.05
    done
  fi
  echo "$kind did not start; its log:" >&2
  cat "$log" >&2
  return 1
}

stop_broker() {
  [ -n "$broker_pid" ] || return 0
  kill "$broker_pid" 2>/dev/null
  wait "$broker_pid" 2>/dev/null
  broker_pid=
}

# run_row KIND ROW [RUN]: one bolide-bench run; results in $out/KIND-ROW[.RUN].{log,json}.
run_row() {
  local kind=$1 row=$2 stem="$out/$1-$2${3:+.$3}" args=()
  case $row in
    ingest-sync|ingest-nosync) args=(ingest --authors="$authors" --duration="$ingest_s") ;;
    fanout-paced) args=(fanout --subscribers="$subs" --count="$paced_count" --rate="$paced_rate") ;;
    fanout-b2b) args=(fanout --subscribers="$subs" --count="$b2b_count" --rate=0) ;;
    filter) args=(filter --subscribers="$subs" --count="$filter_count" --rate="$paced_rate") ;;
    fanout-5k) args=(fanout --subscribers=5000 --count="$wide_count" --rate="$wide_rate") ;;
    fanout-10k) args=(fanout --subscribers=10000 --count="$wide_count" --rate="$wide_rate") ;;
    *) echo "unknown row $row" >&2; return 1 ;;
  esac
  start_broker "$kind" "$row" || return 1
  echo "== $kind $row${3:+ (run $3 of $ingest_runs)}: bolide-bench ${args[*]}"
  "$bench" --receive-port="$rport" --broadcast-port="$bport" --pid="$broker_pid" \
    --max-seconds="$max_s" "${args[@]}" >"$stem.log" 2>&1
  local rc=$?
  sed 's/^/   /' "$stem.log" | grep -v '^   {'
  tail -n 1 "$stem.log" | grep '^{' >"$stem.json" || rm -f "$stem.json"
  stop_broker
  [ $rc = 0 ] || echo "   (bolide-bench exit status $rc)"
  failures=$((failures + (rc != 0)))
}

# null_skips ROW: the null broker has no database (ingest-sync) and no filters (filter).
null_skips() { [ "$1" = ingest-sync ] || [ "$1" = filter ]; }

# skips KIND ROW: cells not run. Comet has no --no-sync (its dbm never fsyncs), so its one
# ingest row serves both; connecting 10 000 subscribers to Comet takes minutes.
skips() {
  { [ "$1" = comet ] && { [ "$2" = ingest-nosync ] || [ "$2" = fanout-10k ]; }; } ||
    { [ "$1" = null ] && null_skips "$2"; }
}
is_ingest() { [ "$1" = ingest-sync ] || [ "$1" = ingest-nosync ]; }

# median_run KIND ROW: of the runs KIND-ROW.N.json, the one with the median rate becomes
# KIND-ROW.json (the lower middle one for an even count); prints the rates in run order.
median_run() {
  local n f files=() rates=
  for n in $(seq "$ingest_runs"); do
    f="$out/$1-$2.$n.json"
    [ -f "$f" ] || continue
    files+=("$f")
    rates+="$(jq -r '.accepted_per_s * 10 | round / 10' "$f") "
  done
  [ ${#files[@]} -gt 0 ] || return 0
  f=$(for f in "${files[@]}"; do echo "$(jq -r '.accepted_per_s' "$f") $f"; done |
    sort -g | sed -n "$(( (${#files[@]} + 1) / 2 ))p" | cut -d' ' -f2-)
  cp "$f" "$out/$1-$2.json"
  echo "$rates"
}

failures=0
kinds=(null bolide)
[ $compare = 1 ] && kinds+=(comet)
[ -n "${BENCH_KINDS:-}" ] && read -r -a kinds <<<"$BENCH_KINDS"
# Ingest rows first, in BENCH_INGEST_RUNS rounds of every broker, so that each broker's
# runs are spread over the same minutes (a 10-s run is at the mercy of this shared
# machine's moment); the run with the median rate is the one reported.
for n in $(seq "$ingest_runs"); do
  for row in "${rows[@]}"; do
    is_ingest "$row" || continue
    for kind in "${kinds[@]}"; do
      [ "$n" = 1 ] && rm -f "$out/$kind-$row".json "$out/$kind-$row".[0-9]*.json "$out/$kind-$row".[0-9]*.log
      skips "$kind" "$row" || run_row "$kind" "$row" "$n"
    done
  done
done
ingest_runs_report=$(
  for row in "${rows[@]}"; do
    is_ingest "$row" || continue
    for kind in "${kinds[@]}"; do
      skips "$kind" "$row" && continue
      printf '%-14s %-9s %s\n' "$row" "$kind" "$(median_run "$kind" "$row")"
    done
  done
)
for row in "${rows[@]}"; do
  is_ingest "$row" && continue
  for kind in "${kinds[@]}"; do
    skips "$kind" "$row" || run_row "$kind" "$row"
  done
done

# ---- the table -------------------------------------------------------------------------
j() { # j FILE FILTER
  [ -f "$1" ] && jq -r "$2 // \"-\"" "$1" 2>/dev/null || echo -
}
metric() { # metric KIND ROW -> "rate p50 p99 cpu_us rss_start rss_idle rss_peak tool_us ok"
  local f="$out/$1-$2.json"
  [ "$1" = comet ] && [ "$2" = ingest-nosync ] && f="$out/comet-ingest-sync.json"
  if [ ! -f "$f" ] || { [ "$1" = null ] && null_skips "$2"; }; then echo "- - - - - - - - -"; return; fi
  jq -r '[ (if .mode=="ingest" then .accepted_per_s else .deliveries_per_s end),
           .latency_ms.p50, .latency_ms.p99,
           (if .mode=="ingest" then .cpu_us_per_event else .cpu_us_per_copy end),
           (.broker.rss_kb_start/1024), ((.broker.rss_kb_with_subscribers_idle // null) | if . == null then "-" else (./1024) end),
           (.broker.rss_kb_peak_sampled/1024),
           (.tool.cpu_us_per_event // .tool.cpu_us_per_copy),
           (if .mode=="ingest" then "acked=\(.acked),naks=\(.naks),err=\(.errors)"
            else "\(.delivered)/\(.expected_deliveries),lost=\(.lost),dup=\(.duplicates),unexp=\(.unexpected)" end)
         ] | map(if type=="number" then (.*10|round/10|tostring) elif . == null then "-" else tostring end) | join(" ")' "$f"
}
ratio() { # ratio A B [DECIMALS] -> A/B with 1 (or DECIMALS) decimals, or -
  awk -v a="$1" -v b="$2" -v d="${3:-1}" 'BEGIN{ if (a+0>0 && b+0>0) printf "%.*f", d, a/b; else printf "-" }'
}
raw() { # raw KIND ROW -> "rate p99 cpu", unrounded (for the floor ratios), or "- - -"
  local f="$out/$1-$2.json"
  if [ ! -f "$f" ] || { [ "$1" = null ] && null_skips "$2"; }; then echo "- - -"; return; fi
  jq -r '[ (if .mode=="ingest" then .accepted_per_s else .deliveries_per_s end), .latency_ms.p99,
           (if .mode=="ingest" then .cpu_us_per_event else .cpu_us_per_copy end)
         ] | map(if . == null then "-" else tostring end) | join(" ")' "$f"
}

echo
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), Linux $(uname -r)"
echo "rate = events/s (ingest) or deliveries/s; latency ms (ingest: connect-to-ack; else e2e); cpu = broker us per event (ingest) or per copy; RSS MiB (start, with subscribers idle, peak); tool = bolide-bench's own us per event/copy"
{
printf '%-14s %-9s %10s %9s %9s %9s %6s %6s %6s %8s  %s\n' row broker rate p50 p99 cpu rss0 rssS rssPk tool counts
for row in "${rows[@]}"; do
  for kind in "${kinds[@]}"; do
    read -r rate p50 p99 cpu r0 rs rp tool counts <<<"$(metric "$kind" "$row")"
    printf '%-14s %-9s %10s %9s %9s %9s %6s %6s %6s %8s  %s\n' "$row" "$kind" "$rate" "$p50" "$p99" "$cpu" "$r0" "$rs" "$rp" "$tool" "$counts"
  done
done
} | tee "$out/table.txt"

if [ -n "$ingest_runs_report" ]; then
  echo
  echo "ingest runs (events/s, in run order; the table shows each broker's median run)"
  {
  echo "$ingest_runs_report"
  if [ $compare = 1 ]; then
    for row in "${rows[@]}"; do
      is_ingest "$row" || continue
      printf '%-14s %-7s' "$row" "x Comet"
      for n in $(seq "$ingest_runs"); do
        printf ' %s' "$(ratio "$(j "$out/bolide-$row.$n.json" .accepted_per_s)" \
          "$(j "$out/comet-ingest-sync.$n.json" .accepted_per_s)")"
      done
      echo " (bolide / Comet, run by run)"
    done
  fi
  } | tee "$out/ingest-runs.txt"
fi

if [[ " ${kinds[*]} " == *" noarchive "* ]]; then
  echo
  echo "the archive's cost (bolide / bolide --no-archive, median runs: rate, and each run's rate by round)"
  {
  for row in "${rows[@]}"; do
    is_ingest "$row" || continue
    printf '%-14s %8s   rounds:' "$row" "$(ratio "$(j "$out/bolide-$row.json" .accepted_per_s)" \
      "$(j "$out/noarchive-$row.json" .accepted_per_s)" 2)"
    for n in $(seq "$ingest_runs"); do
      printf ' %s' "$(ratio "$(j "$out/bolide-$row.$n.json" .accepted_per_s)" \
        "$(j "$out/noarchive-$row.$n.json" .accepted_per_s)" 2)"
    done
    echo
  done
  } | tee "$out/archive-cost.txt"
fi

echo
echo "bolide vs null floor (rate: fraction of the floor's rate reached; p99, cpu: times the floor's)"
{
printf '%-14s %12s %12s %12s\n' row 'rate/floor' 'p99/floor' 'cpu/floor'
for row in "${rows[@]}"; do
  read -r br bp99 bcpu <<<"$(raw bolide "$row")"
  read -r nr np99 ncpu <<<"$(raw null "$row")"
  printf '%-14s %12s %12s %12s\n' "$row" "$(ratio "$br" "$nr" 2)" "$(ratio "$bp99" "$np99")" \
    "$(ratio "$bcpu" "$ncpu")"
done
} | tee "$out/floor.txt"

if [ $compare = 1 ]; then
  echo
  echo "bolide vs Comet (ratio = how many times better bolide is)"
  {
  printf '%-14s %12s %12s %12s %12s %12s\n' row 'rate x' 'p99 /' 'cpu /' 'rss0 /' 'rssS /'
  for row in "${rows[@]}"; do
    read -r br _ bp99 bcpu br0 brs _ _ _ <<<"$(metric bolide "$row")"
    read -r cr _ cp99 ccpu cr0 crs _ _ _ <<<"$(metric comet "$row")"
    printf '%-14s %12s %12s %12s %12s %12s\n' "$row" "$(ratio "$br" "$cr")" "$(ratio "$cp99" "$bp99")" \
      "$(ratio "$ccpu" "$bcpu")" "$(ratio "$cr0" "$br0")" "$(ratio "$crs" "$brs")"
  done
  } | tee "$out/compare.txt"
fi
echo
echo "JSON: $out/*.json"
[ $failures = 0 ]
