#!/usr/bin/env bash
# Side-by-side speed benchmark: eMoE's host path against llama.cpp on the same weights and thread count.
#
#   bench/peer/run.sh [--quick] [--rounds N] [--threads N] [--out DIR]
#
# For each model (the shipped weights/tiny-mixtral as F32 GGUF; a random-weight 8-layer Mixtral-shaped BF16
# checkpoint as BF16 GGUF: the same weights on both sides) it runs llama.cpp (the peer harness llama_speed.py,
# prebuilt libllama from npm node-llama-cpp 3.22.1) and `emoe bench speed` alternately, A B A B ..., each under
# /usr/bin/time -v, and writes DIR/results.md and DIR/results.json (default bench/results/peer).
#
#   --quick       smoke run: 16 prompt tokens, 8 decode steps, 1 rep, 1 round; results to $PEER_DIR/results-quick
#   --rounds N    A B rounds per model (default 3)
#   --threads N   threads of both engines (default 2)
#   --out DIR     where results.md and results.json go
#
# Environment: EMOE_PEER_DIR (scratch dir for the peer tools, GGUF files and logs; default /tmp/emoe-peer),
# EMOE_MIXTRAL_SHAPED (the Mixtral-shaped checkpoint; made if missing; default /tmp/mixtral-shaped),
# EMOE_PEER_TOOLS (the peer tools to copy; default ../shared/tools/peer beside the repository).
# Needs: the .NET 10 SDK, node + npm, python3 with numpy (/usr/bin/python3; python3-numpy is installed with apt-get
# when missing and running as root), /usr/bin/time.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
PEER_DIR=${EMOE_PEER_DIR:-/tmp/emoe-peer}
BIG=${EMOE_MIXTRAL_SHAPED:-/tmp/mixtral-shaped}
TOOLS=${EMOE_PEER_TOOLS:-$REPO/../shared/tools/peer}
NLC_VERSION=3.22.1

NP=128 NG=128 REPS=3 ROUNDS=3 THREADS=2 QUICK=0 OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1; NP=16; NG=8; REPS=1; ROUNDS=1; shift ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
done
if [ -z "$OUT" ]; then
  if [ "$QUICK" = 1 ]; then OUT=$PEER_DIR/results-quick; else OUT=$REPO/bench/results/peer; fi
fi
mkdir -p "$OUT" "$PEER_DIR"
OUT=$(cd "$OUT" && pwd)
START=$(date +%s)
log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }

# --- tools -------------------------------------------------------------------------------------------------
PY=/usr/bin/python3
if ! "$PY" -c 'import numpy' 2>/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing python3-numpy"
    apt-get update -qq && apt-get install -y -qq python3-numpy >/dev/null
  else
    echo "run.sh: /usr/bin/python3 has no numpy: apt-get install python3-numpy" >&2; exit 1
  fi
fi
[ -x /usr/bin/time ] || { echo "run.sh: /usr/bin/time is missing: apt-get install time" >&2; exit 1; }
[ -f "$TOOLS/llama_speed.py" ] || { echo "run.sh: no peer tools at $TOOLS (set EMOE_PEER_TOOLS)" >&2; exit 1; }

# The peer tools are run from a copy (shared/ is read-only; they look for node/node_modules beside them).
for f in "$TOOLS"/*; do
  if ! cmp -s "$f" "$PEER_DIR/$(basename "$f")"; then cp "$f" "$PEER_DIR/" && chmod u+w "$PEER_DIR/$(basename "$f")"; fi
done
BINS=$PEER_DIR/node/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64
if [ ! -d "$BINS" ]; then
  log "npm install node-llama-cpp@$NLC_VERSION in $PEER_DIR/node"
  mkdir -p "$PEER_DIR/node"
  (cd "$PEER_DIR/node" && { [ -f package.json ] || npm init -y >/dev/null; } && \
    npm install --no-audit --no-fund "node-llama-cpp@$NLC_VERSION" >"$PEER_DIR/npm-install.log" 2>&1)
fi

# --- models ------------------------------------------------------------------------------------------------
if [ ! -f "$BIG/model.safetensors" ]; then
  log "making the Mixtral-shaped checkpoint in $BIG"
  "$PY" "$REPO/bench/peer/make_mixtral_shaped.py" "$BIG"
fi
TINY=$REPO/weights/tiny-mixtral
TINY_GGUF=$PEER_DIR/tiny-mixtral-f32.gguf
BIG_GGUF=$PEER_DIR/mixtral-shaped-bf16.gguf
convert() { # HF_DIR OUT.gguf TYPE
  if [ ! -f "$2" ] || [ "$1/model.safetensors" -nt "$2" ]; then
    log "converting $1 to $2 ($3)"
    "$PY" "$PEER_DIR/hf2gguf.py" "$1" "$2" --outtype "$3" >&2
  fi
}
convert "$TINY" "$TINY_GGUF" f32
convert "$BIG" "$BIG_GGUF" bf16

# --- eMoE --------------------------------------------------------------------------------------------------
log "building emoe (Release)"
dotnet build "$REPO/src/eMoE.Cli" -c Release --nologo -v q >"$PEER_DIR/build.log" 2>&1 || { cat "$PEER_DIR/build.log" >&2; exit 1; }
EMOE=$REPO/src/eMoE.Cli/bin/Release/net10.0/emoe
"$EMOE" inspect --model "$BIG" >"$PEER_DIR/inspect-mixtral-shaped.txt"

# --- runs --------------------------------------------------------------------------------------------------
RAW=$PEER_DIR/raw
rm -rf "$RAW"; mkdir -p "$RAW"
COMMANDS=$RAW/commands.txt
: >"$COMMANDS"
# What the runs measure: this commit's emoe (the tree is dirty when tracked files outside the results differ from it).
DIRTY=false
[ -z "$(git -C "$REPO" status --porcelain --untracked-files=no -- . ':!bench/results/peer')" ] || DIRTY=true
printf '{"commit": "%s", "dirty": %s, "started_utc": "%s"}\n' "$(git -C "$REPO" rev-parse HEAD)" "$DIRTY" \
  "$(date -u '+%Y-%m-%d %H:%M UTC')" >"$RAW/run.json"
run_one() { # NAME ENGINE ROUND command...
  local name=$1 engine=$2 round=$3; shift 3
  local base=$RAW/$name.$engine.$round
  echo "$*" >>"$COMMANDS"
  log "$name round $round: $engine (load $(cut -d' ' -f1-3 /proc/loadavg))"
  cat /proc/loadavg >"$base.load"
  if ! /usr/bin/time -v "$@" >"$base.json" 2>"$base.err"; then
    echo "run.sh: $engine failed on $name (round $round): $*" >&2; tail -20 "$base.err" >&2; exit 1
  fi
  cat /proc/loadavg >>"$base.load"
}
for model in tiny-mixtral mixtral-shaped; do
  if [ "$model" = tiny-mixtral ]; then dir=$TINY; gguf=$TINY_GGUF; else dir=$BIG; gguf=$BIG_GGUF; fi
  for round in $(seq 1 "$ROUNDS"); do
    run_one "$model" llama.cpp "$round" "$PY" "$PEER_DIR/llama_speed.py" "$gguf" "$NP" "$NG" "$THREADS" --reps "$REPS"
    run_one "$model" emoe "$round" "$EMOE" bench speed --model "$dir" --device cpu --threads "$THREADS" \
      --prompt-tokens "$NP" --gen-tokens "$NG" --reps "$REPS" --json
  done
done

END=$(date +%s)
log "summarising into $OUT"
"$PY" "$REPO/bench/peer/summarize.py" --raw "$RAW" --out "$OUT" --repo "$REPO" --wall-seconds $((END - START)) \
  --gguf "tiny-mixtral=$TINY_GGUF" --gguf "mixtral-shaped=$BIG_GGUF" --checkpoint "tiny-mixtral=$TINY" --checkpoint "mixtral-shaped=$BIG" \
  --rounds "$ROUNDS" --quick "$QUICK"
cat "$OUT/results.md"
