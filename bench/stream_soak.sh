#!/usr/bin/env bash
# Soak: the pedestrian video looped through NanoDet for MINUTES (default 10) at its own frame
# rate (a camera), policy latest, events and the live page on; RSS sampled every 10 s. Memory
# should be flat after warm-up: prints the samples, then first / last / max and the growth.
# Usage: bench/stream_soak.sh [MINUTES] [BACKEND]   (after ./scripts/setup)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/env.sh
MINUTES="${1:-10}"
BACKEND="${2:-ort}"
cargo build --release --locked -q -p strix
BIN="${CARGO_TARGET_DIR:-target}/release/strix"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
STRIX_MODEL_PATH="$STRIX_FIXTURES/models" "$BIN" stream "$STRIX_FIXTURES/video/vtest_10s_h264.mp4" \
  --loop --realtime --policy latest --backend "$BACKEND" --duration "${MINUTES}m" \
  --events "$OUT/events.jsonl" --http 127.0.0.1:0 --line path=0,330,768,330 --json -q > "$OUT/summary.json" &
PID=$!
echo "soak: pid $PID, $MINUTES min, backend $BACKEND"
printf "%6s %10s\n" "t (s)" "RSS (MiB)"
SAMPLES=()
START=$(date +%s)
while kill -0 "$PID" 2>/dev/null; do
  RSS_KB=$(awk '/VmRSS/ {print $2}' "/proc/$PID/status" 2>/dev/null || true)
  if [ -n "$RSS_KB" ]; then
    SAMPLES+=("$RSS_KB")
    printf "%6d %10.1f\n" $(( $(date +%s) - START )) "$(awk "BEGIN {print $RSS_KB / 1024}")"
  fi
  sleep 10
done
wait "$PID"
python3 - "$OUT/summary.json" "$OUT/events.jsonl" "${SAMPLES[@]}" <<'PY'
import json, sys
summary = json.load(open(sys.argv[1]))
events = sum(1 for _ in open(sys.argv[2]))
rss = [int(k) / 1024 for k in sys.argv[3:]]
src = summary["sources"][0]
print(f"frames answered {src['frames_processed']} of {src['frames_read']} read, dropped {src['dropped']}, "
      f"{src['fps']} fps, lag p50 {src['lag_ms']['p50']} ms p95 {src['lag_ms']['p95']} ms max {src['lag_ms']['max']} ms, "
      f"{events} events")
warm = rss[min(3, len(rss) - 1):]
print(f"RSS MiB: first {rss[0]:.1f}, after warm-up {warm[0]:.1f}, last {rss[-1]:.1f}, max {max(rss):.1f}; "
      f"growth after warm-up {rss[-1] - warm[0]:+.1f} MiB")
PY
