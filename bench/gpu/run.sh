#!/usr/bin/env bash
# The one-command GPU check (bench/gpu/README.md).
#
#   bench/gpu/run.sh prepare          here: publish the check program self-contained for linux-x64, pack it,
#                                     check that what travels to the GPU machine fits 64 MiB, print the device call
#   bench/gpu/run.sh gpu              there: every stage on CUDA under a time budget (under 8 minutes);
#                                     results to bench/results/gpu/ and, when $OUT is set, flat into $OUT
#   bench/gpu/run.sh dry-run [DIR]    here: the same stages from the same pack on ILGPU's CPU accelerator at
#                                     small shapes, into DIR (default: a scratch directory)
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PROJECT=bench/gpu/eMoE.GpuCheck/eMoE.GpuCheck.csproj
PUBLISH=$ROOT/bench/gpu/publish          # ignored (.gitignore)
APP_DIR=$PUBLISH/app                     # the published program
PACK_REL=bench/gpu/publish/emoe-gpu-check.tar.gz
PACK=$ROOT/$PACK_REL                     # what the device call carries
LIMIT=$((64 * 1024 * 1024))              # what may travel to the GPU machine: working tree + carried paths
BUDGET_GPU=420                           # seconds for all stages on the GPU machine (the run call's timeout_s is 450)
TIMEOUT_S=450

die() { echo "error: $*" >&2; exit 1; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }

# Bytes of what the device tool sends besides carried paths: tracked and untracked-not-ignored files, and shared/.
tree_bytes() {
  local bytes
  bytes=$(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard | xargs -0 stat -c %s 2>/dev/null | awk '{ s += $1 } END { print s + 0 }')
  if [ -d "$ROOT/shared" ] && git -C "$ROOT" check-ignore -q shared; then
    bytes=$((bytes + $(du -sb "$ROOT/shared" | cut -f1)))
  fi
  echo "$bytes"
}

prepare() {
  command -v dotnet >/dev/null || die "the .NET 10 SDK (dotnet) is not on PATH"
  rm -rf "$APP_DIR" "$PACK"
  mkdir -p "$PUBLISH"
  echo "== publishing $PROJECT (self-contained linux-x64, trimmed in partial mode)"
  (cd "$ROOT" && dotnet publish "$PROJECT" -c Release -r linux-x64 -o "$APP_DIR" -nologo) || die "dotnet publish failed"
  # Native parts of the runtime that the check never loads: debugger and dump support, the standalone
  # GCs (only with DOTNET_GCName) and LTTng tracing (optional: the runtime runs without it).
  rm -f "$APP_DIR"/{createdump,libmscordaccore.so,libmscordbi.so,libclrgc.so,libclrgcexp.so,libcoreclrtraceptprovider.so}
  "$APP_DIR/eMoE.GpuCheck" --help >/dev/null || die "the published program does not start"
  tar -czf "$PACK" -C "$APP_DIR" . || die "packing failed"

  local app pack tree total
  app=$(du -sb "$APP_DIR" | cut -f1)
  pack=$(stat -c %s "$PACK")
  tree=$(tree_bytes)
  total=$((tree + pack))
  echo
  echo "== sizes"
  echo "published program   $(mib "$app") in $APP_DIR ($(find "$APP_DIR" -type f | wc -l) files)"
  echo "packed (carried)    $(mib "$pack") in $PACK_REL"
  echo "working tree        $(mib "$tree") (tracked + untracked-not-ignored files of $ROOT)"
  echo "travels in all      $(mib "$total") of $(mib "$LIMIT")"
  if [ "$pack" -gt "$LIMIT" ] || [ "$total" -gt "$LIMIT" ]; then
    echo >&2
    echo "error: OVER THE LIMIT: $(mib "$total") would travel to the GPU machine; at most $(mib "$LIMIT") may." >&2
    echo "error: shrink the working tree (untracked files count) or the publish before calling the device tool." >&2
    exit 1
  fi
  if [ "$(git -C "$ROOT" rev-parse --absolute-git-dir)" != "$(cd "$ROOT" && cd "$(git rev-parse --git-common-dir)" && pwd)" ]; then
    echo
    echo "note: $ROOT is a linked git worktree. The device tool sends the checkout the calling session started"
    echo "      in, not this worktree: run 'bench/gpu/run.sh prepare' in that checkout (with this branch merged)."
  fi
  echo
  echo "== the device call (tool 'run'); it finishes in under 8 minutes by its own stage timeouts"
  echo "command:   bash bench/gpu/run.sh gpu"
  echo "carry:     [\"$PACK_REL\"]"
  echo "timeout_s: $TIMEOUT_S"
  echo "then copy the returned results.md, results.json and log.txt into bench/results/gpu/ and commit them."
}

# Runs every stage with the program unpacked from the pack.
#   $1 device, $2 results dir, $3 "small" or "", $4 per-stage cap scale, $5 total budget (s), $6 dry-run flag
run_stages() {
  local device=$1 results=$2 small=$3 scale=$4 budget=$5 dry=$6
  local work app log stages start now remaining cap rc t0 t1 secs s
  [ -f "$PACK" ] || die "$PACK_REL not found: run 'bench/gpu/run.sh prepare' on the build machine and carry that file"
  work=$(mktemp -d "${TMPDIR:-/tmp}/emoe-gpu-check.XXXXXX") || die "no scratch directory"
  mkdir -p "$work/app" "$work/stages" "$results"
  log=$work/log.txt
  stages=$work/stages/stages.tsv
  : >"$stages"
  start=$(date +%s)
  {
    echo "== eMoE GPU check: device $device, $(date -u '+%Y-%m-%d %H:%M:%S UTC'), $(uname -srm), $(nproc) processors"
    echo "repository $ROOT at $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
    if command -v nvidia-smi >/dev/null 2>&1; then
      nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.memory,pcie.link.gen.max --format=csv 2>&1
    else
      echo "(no nvidia-smi)"
    fi
    tar -xzf "$PACK" -C "$work/app" 2>&1 || python3 -m tarfile -e "$PACK" "$work/app" 2>&1 || echo "error: cannot unpack $PACK"
  } 2>&1 | tee "$log"
  app=$work/app/eMoE.GpuCheck
  [ -x "$app" ] || die "the unpacked program $app is missing"
  local use_timeout=1
  command -v timeout >/dev/null 2>&1 || { use_timeout=0; echo "warning: no 'timeout' command: stages run without their caps" | tee -a "$log"; }

  local no_device=0
  # stage and its cap in seconds on the GPU (scaled for the dry run)
  for entry in info:45 kernels:75 engine:120 bench:90 decode:60; do
    s=${entry%%:*}
    cap=$(( ${entry##*:} * scale ))
    now=$(date +%s)
    remaining=$(( budget - (now - start) - 15 ))   # 15 s kept for the report
    if [ "$no_device" = 1 ] || [ "$remaining" -lt 5 ]; then
      printf '%s\t-1\t0\n' "$s" >>"$stages"
      echo "== $s: skipped ($([ "$no_device" = 1 ] && echo 'no device' || echo 'time budget spent'))" | tee -a "$log"
      continue
    fi
    [ "$cap" -gt "$remaining" ] && cap=$remaining
    echo "== $s (at most ${cap} s)" | tee -a "$log"
    t0=$(date +%s.%N)
    if [ "$use_timeout" = 1 ]; then
      timeout -k 5 "$cap" "$app" "$s" --device "$device" --out "$work/stages" --repo "$ROOT" $small 2>&1 | tee -a "$log"
    else
      "$app" "$s" --device "$device" --out "$work/stages" --repo "$ROOT" $small 2>&1 | tee -a "$log"
    fi
    rc=${PIPESTATUS[0]}
    t1=$(date +%s.%N)
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
    printf '%s\t%s\t%s\n' "$s" "$rc" "$secs" >>"$stages"
    case $rc in
      0) echo "== $s: passed in ${secs} s" | tee -a "$log" ;;
      124|137) echo "== $s: TIMED OUT after ${secs} s (cap ${cap} s)" | tee -a "$log" ;;
      3) echo "== $s: NO DEVICE: '$device' was not found; the stages that need it are skipped" | tee -a "$log"; no_device=1 ;;
      *) echo "== $s: FAILED (exit $rc) in ${secs} s" | tee -a "$log" ;;
    esac
  done

  if [ "$dry" = 1 ]; then
    # Here there is no GPU: the CUDA path must fail with a clear message and exit code 3, not crash.
    echo "== cuda-absent (expects 'no CUDA device found', exit 3)" | tee -a "$log"
    "$app" info --device cuda --out "$work/cuda-absent" --repo "$ROOT" 2>&1 | tee -a "$log"
    rc=${PIPESTATUS[0]}
    printf 'cuda-absent (expects exit 3)\t%s\t0\n' "$([ "$rc" = 3 ] && echo 0 || echo 1)" >>"$stages"
  fi

  local report_flags=""
  [ "$dry" = 1 ] && report_flags="--dry-run"
  echo "== report" | tee -a "$log"
  "$app" report --out "$work/stages" $report_flags 2>&1 | tee -a "$log"
  rc=${PIPESTATUS[0]}
  echo "== done in $(( $(date +%s) - start )) s: results in $results" | tee -a "$log"

  cp "$work/stages/results.md" "$work/stages/results.json" "$log" "$results/" 2>/dev/null
  if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT" && cp "$work/stages/results.md" "$work/stages/results.json" "$log" "$OUT/" 2>/dev/null
  fi
  rm -rf "$work"
  [ "$no_device" = 1 ] && return 3
  return "$rc"
}

mode=${1:-}
case $mode in
  prepare)
    prepare
    ;;
  gpu)
    run_stages cuda "$ROOT/bench/results/gpu" "" 1 "$BUDGET_GPU" 0
    ;;
  dry-run)
    dir=${2:-$(mktemp -d "${TMPDIR:-/tmp}/emoe-gpu-dry-run.XXXXXX")}
    [ -f "$PACK" ] || prepare || exit 1
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    # The CPU accelerator on a small machine: caps x6; the copy to $OUT is exercised into a scratch folder
    # and held to the device tool's rules for what comes back (at most 8 files, plain names).
    out=$(mktemp -d "${TMPDIR:-/tmp}/emoe-gpu-out.XXXXXX")
    OUT=$out run_stages ilgpu-cpu "$dir" --small 6 3600 1
    rc=$?
    files=$(find "$out" -type f | wc -l)
    bad=$(find "$out" -mindepth 1 | sed "s|^$out/||" | grep -cvE '^[A-Za-z0-9._-]+$')
    echo "dry run: \$OUT received $files file(s): $(cd "$out" && ls | tr '\n' ' ')"
    if [ "$files" -eq 0 ] || [ "$files" -gt 8 ] || [ "$bad" -ne 0 ]; then
      echo "error: what \$OUT received breaks the device tool's rules (1 to 8 flat files, letters/digits/._- names)" >&2
      rc=1
    fi
    rm -rf "$out"
    echo "dry run: results in $dir (exit $rc)"
    exit $rc
    ;;
  *)
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
