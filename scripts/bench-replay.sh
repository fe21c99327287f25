#!/usr/bin/env bash
# Side-by-side wall time of `flowgate replay` and `tcpdump -r IN -w OUT` on the same
# 1M-packet capture (project issue 2). Release build; several alternating runs of each;
# prints the median wall time, packets/s and the ratio.
#
#   scripts/bench-replay.sh [RUNS] [PACKETS]      (defaults: 7 runs, 1000000 packets)
#   PIPE=other.yaml scripts/bench-replay.sh      (replay another pipeline)
#
# Needs tcpdump (apt-get install tcpdump). Work files go to $BENCH_DIR (default a fresh
# directory under /tmp, removed at the end).
set -euo pipefail

RUNS=${1:-7}
PACKETS=${2:-1000000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PIPE=${PIPE:-"$ROOT/pipelines/web-farm.yaml"}
DIR=${BENCH_DIR:-$(mktemp -d /tmp/flowgate-bench.XXXXXX)}
trap '[ -z "${BENCH_DIR:-}" ] && rm -rf "$DIR"' EXIT

command -v tcpdump >/dev/null || { echo "tcpdump not found (apt-get install tcpdump)" >&2; exit 1; }
(cd "$ROOT" && cargo build --release --quiet --bin flowgate)
FG="$ROOT/target/release/flowgate"

IN="$DIR/mix-1m.pcap"
"$FG" gen mix --pipeline "$PIPE" --packets "$PACKETS" --flows "$PACKETS" -o "$IN" 2>&1 | sed 's/^/gen: /'
"$FG" replay --quiet --pipeline "$PIPE" --input "$IN" --output "$DIR/fg.pcap" --stats-json "$DIR/stats.json"
N=$(sed -n 's/^ *"packets_in": \([0-9]*\).*/\1/p' "$DIR/stats.json")
echo "input: $IN, $(stat -c %s "$IN") bytes, $N packets"
echo "host: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"

# One run: appends "wall user+sys" seconds of the command to file $1.
TIMEFORMAT='%R %U %S'
measure() {
    local out=$1 t
    shift
    t=$( { time "$@" >/dev/null 2>&1; } 2>&1 )
    echo "$t" | awk '{printf "%.4f %.4f\n", $1, $2 + $3}' >>"$out"
}

median() { sort -g | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.4f\n", m}'; }

REPLAY=("$FG" replay --quiet --pipeline "$PIPE" --input "$IN" --output "$DIR/fg.pcap")
TCPDUMP=(tcpdump -r "$IN" -w "$DIR/td.pcap")
: >"$DIR/fg.txt"
: >"$DIR/td.txt"
for i in $(seq 1 "$RUNS"); do
    # Alternate which goes first so neither always runs on a warmer cache.
    if [ $((i % 2)) -eq 1 ]; then
        measure "$DIR/fg.txt" "${REPLAY[@]}"
        measure "$DIR/td.txt" "${TCPDUMP[@]}"
    else
        measure "$DIR/td.txt" "${TCPDUMP[@]}"
        measure "$DIR/fg.txt" "${REPLAY[@]}"
    fi
    echo "run $i: replay $(tail -1 "$DIR/fg.txt") s, tcpdump $(tail -1 "$DIR/td.txt") s (wall, cpu)"
done

FGM=$(cut -d' ' -f1 "$DIR/fg.txt" | median)
TDM=$(cut -d' ' -f1 "$DIR/td.txt" | median)
FGC=$(cut -d' ' -f2 "$DIR/fg.txt" | median)
TDC=$(cut -d' ' -f2 "$DIR/td.txt" | median)
printf '%-38s %12s %14s %12s\n' "command ($RUNS runs)" "median wall" "packets/s" "median cpu"
printf '%-38s %12.4f %14.0f %12.4f\n' "flowgate replay --quiet (web-farm)" "$FGM" "$(echo "$N / $FGM" | bc -l)" "$FGC"
printf '%-38s %12.4f %14.0f %12.4f\n' "tcpdump -r IN -w OUT" "$TDM" "$(echo "$N / $TDM" | bc -l)" "$TDC"
printf 'ratio replay/tcpdump: wall %.3f, cpu %.3f (%s)\n' "$(echo "$FGM / $TDM" | bc -l)" "$(echo "$FGC / $TDC" | bc -l)" \
    "$(if [ "$(echo "$FGM <= $TDM" | bc -l)" = 1 ]; then echo "replay at least as fast"; else echo "replay SLOWER"; fi)"
