#!/usr/bin/env bash
# `make gpu-check`: cnnlab's GPU path, checked and measured in one command, within 8 minutes.
#
# On a CUDA machine (the device tool's lent GPU, or any):
#   1. installs the wheels of bench/gpu_wheels.txt from .whl/ (`make gpu-wheels` fills it) into
#      $GPU_CHECK_SITE (/tmp/site), put on PYTHONPATH with src/ (cnnlab is not installed there);
#   2. runs the tests of bench/gpu_tests.txt on cuda, `pytest -x` (stops at the first failure);
#   3. runs the benchmarks' CUDA rows (bench/gpu_rows.py): augment, then training workload by
#      workload, each until the budget runs out, on the data of .gpu-data/ (`make gpu-data`);
#   4. leaves under $OUT (else bench/out/gpu_check/) three files: summary.md (the phases and
#      every table), gpu_check.log (all output) and gpu_check.tar.gz (every log, JSON and table).
# Without CUDA it says so and dry-runs the CPU-side steps (wheel list, test collection, bench
# command lines, output folder), then exits 0.
#
# Knobs (environment): GPU_CHECK_BUDGET_S (450: the whole run, set-up included),
# GPU_CHECK_PHASES ("tests augment train"; "speed", a call of its own: the CIFAR-10 speed recipe
# over GPU_CHECK_SPEED_SEEDS (5) seeds on GPU_CHECK_SPEED_DATA, .speed-data/cifar10),
# GPU_CHECK_WORKLOADS (training workloads, in order), GPU_CHECK_TEST_S (210),
# GPU_CHECK_TEST_WORKERS (8, with pytest-xdist), PYTHON (python3).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
START=$SECONDS
BUDGET=${GPU_CHECK_BUDGET_S:-450}
PHASES=${GPU_CHECK_PHASES:-tests augment train}
# the workloads with goals of their own first (Keras at S4's batch 40, ResNet-50's ceiling)
WORKLOADS=${GPU_CHECK_WORKLOADS:-s4_catsdogs resnet50 s3_basenet s1_ivannet efficientnet_lite0}
TEST_S=${GPU_CHECK_TEST_S:-210}
SITE=${GPU_CHECK_SITE:-/tmp/site}
RESERVE_S=15  # kept back for the summary and the bundle
if [ -n "${OUT:-}" ]; then DEST=$OUT; else DEST=$ROOT/bench/out/gpu_check; fi
if [ -d "$ROOT/.gpu-data" ]; then DATA=$ROOT/.gpu-data; else DATA=$ROOT/../shared/datasets; fi
SPEED_DATA=${GPU_CHECK_SPEED_DATA:-$ROOT/.speed-data/cifar10}  # the complete CIFAR-10 (60 MiB)

# One requirement (NAME==VERSION) a line, comments and blanks dropped.
read_list() { sed -e 's/#.*//' -e 's/[[:space:]]//g' "$1" | grep -v '^$' || true; }
mapfile -t WHEELS < <(read_list bench/gpu_wheels.txt)
mapfile -t TESTS < <(read_list bench/gpu_tests.txt)
read -r -a WORKLOAD_LIST <<<"$WORKLOADS"

remaining() { echo $((BUDGET - (SECONDS - START) - RESERVE_S)); }
say() { echo "gpu-check: $*"; }

# The .whl file of NAME==VERSION (wheel names spell the project name with underscores).
wheel_for() {
  local name=${1%%==*} version=${1#*==}
  name=$(echo "$name" | tr 'A-Z.-' 'a-z__')
  compgen -G ".whl/${name}-${version}-*.whl" | head -1 || true
}

check_lists() {
  local req have=0
  for req in "${WHEELS[@]}"; do
    [[ $req =~ ^[A-Za-z0-9._-]+==[0-9][A-Za-z0-9.+!-]*$ ]] ||
      { say "bench/gpu_wheels.txt: '$req' is not NAME==VERSION"; return 1; }
    if [ -n "$(wheel_for "$req")" ]; then have=$((have + 1)); fi
  done
  [ "${#WHEELS[@]}" -gt 0 ] || { say "bench/gpu_wheels.txt lists no wheel"; return 1; }
  say "wheel list: ${#WHEELS[@]} pinned requirements parse; $have of them in .whl/" \
    "$([ "$have" = "${#WHEELS[@]}" ] || echo '(make gpu-wheels fetches the rest)')"
  for req in "${TESTS[@]}"; do
    [ -f "$req" ] || { say "bench/gpu_tests.txt: $req does not exist"; return 1; }
  done
}

# Every benchmark phase's flags in one command line, for the dry run to parse.
BENCH_ARGS=(--datasets "$DATA" --only augment --only train)
for workload in "${WORKLOAD_LIST[@]}"; do BENCH_ARGS+=(--workload "$workload"); done

has_cuda() { "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; }

dry_run() {
  say "no CUDA GPU here (torch.cuda.is_available() is false, python: $PY): dry run of the CPU-side steps"
  check_lists
  local collected
  collected=$("$PY" -m pytest --collect-only -q -p no:cacheprovider "${TESTS[@]}" 2>&1) ||
    { echo "$collected" | tail -20; say "the CUDA tests do not collect"; return 1; }
  say "CUDA tests: $(echo "$collected" | grep -E '[0-9]+ tests? collected' | tail -1) from ${#TESTS[@]} files"
  local probe
  probe=$(mktemp -d)
  "$PY" -m bench.gpu_rows --dry-run "${BENCH_ARGS[@]}" --out "$probe" | sed 's/^/gpu-check: bench: /'
  if [ -f "$SPEED_DATA/train.zip" ]; then
    "$PY" -m bench.gpu_speed --dry-run --data "$SPEED_DATA" --out "$probe/speed" |
      sed 's/^/gpu-check: speed: /'
  else
    say "speed: no $SPEED_DATA/train.zip here (make speed-data); GPU_CHECK_PHASES=speed runs it"
  fi
  rm -rf "$probe"
  mkdir -p "$DEST" && touch "$DEST/.write-probe" && rm "$DEST/.write-probe"
  say "output folder $DEST: writable"
  local sizes
  # du fails on a folder not fetched yet (a fresh clone): list what is there
  sizes=$({ du -sh .whl .gpu-data 2>/dev/null || true; } | awk '{printf "%s%s %s", sep, $2, $1; sep=", "}')
  say "to carry: ${sizes:-nothing yet (make gpu-wheels gpu-data)}"
  say "dry run passed in $((SECONDS - START)) s; on a GPU machine this installs the wheels, runs" \
    "the CUDA tests and the GPU benchmarks"
}

if ! has_cuda; then
  dry_run
  exit 0
fi

# ---------------------------------------------------------------- the GPU run
WORK=$(mktemp -d /tmp/gpu_check.XXXX)
mkdir -p "$DEST"
: >"$DEST/gpu_check.log"
exec > >(tee -a "$DEST/gpu_check.log") 2>&1
TEE=$!
declare -A STATUS SPENT
ORDER=()
FAILED=0

finish() {
  local phase summary=$WORK/summary.md
  {
    echo "# make gpu-check, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    cat "$WORK/machine.txt" 2>/dev/null || true
    echo
    echo "| phase | status | seconds |"
    echo "|---|---|---:|"
    for phase in "${ORDER[@]}"; do echo "| $phase | ${STATUS[$phase]} | ${SPENT[$phase]:-0} |"; done
    echo
    echo "Total $((SECONDS - START)) s of a ${BUDGET} s budget."
    for phase in "$WORK"/augment/augment.md "$WORK"/train-*/train.md "$WORK"/speed/speed.md; do
      if [ -f "$phase" ]; then echo; cat "$phase"; fi
    done
  } >"$summary"
  cp "$summary" "$DEST/" 2>/dev/null || true
  tar -czf "$DEST/gpu_check.tar.gz" -C "$WORK" . 2>/dev/null || true
  if [ -f "$WORK/tests.log" ] && [ "${STATUS[tests]:-}" != ok ]; then
    echo "---- the CUDA tests' last lines"
    tail -60 "$WORK/tests.log"
  fi
  echo "---- gpu-check summary (also in $DEST/summary.md)"
  sed -n '/^| phase/,/^Total/p' "$summary"
  exec >&- 2>&-
  wait "$TEE" 2>/dev/null || true  # the last lines reach the caller before this returns
}
trap finish EXIT

# run_phase NAME LIMIT_S COMMAND...: the command under `timeout`, its output in $WORK/NAME.log.
run_phase() {
  local name=$1 limit=$2 started=$SECONDS rc
  shift 2
  ORDER+=("$name")
  if [ "$limit" -lt 30 ]; then
    STATUS[$name]="not run: budget spent (rerun with GPU_CHECK_PHASES)"
    return 0
  fi
  say "$name: running (limit ${limit} s)"
  set +e
  timeout -k 10 "$limit" "$@" 2>&1 | tee "$WORK/$name.log"
  rc=${PIPESTATUS[0]}
  set -e
  SPENT[$name]=$((SECONDS - started))
  case $rc in
    0) STATUS[$name]=ok ;;
    124 | 137) STATUS[$name]="TIMED OUT after ${limit} s"; FAILED=1 ;;
    *) STATUS[$name]="FAILED (exit $rc)"; FAILED=1 ;;
  esac
  say "$name: ${STATUS[$name]} in ${SPENT[$name]} s"
}

setup() {
  local req file files=()  # called as a condition, where set -e is off: each step checked
  check_lists || return 1
  for req in "${WHEELS[@]}"; do
    file=$(wheel_for "$req")
    [ -n "$file" ] || { say "no wheel for $req in .whl/: run make gpu-wheels here, carry .whl"; return 1; }
    files+=("$file")
  done
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" "${files[@]}" || return 1
  export PYTHONPATH=$ROOT/src:$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}
  {
    echo "GPU: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -1)"
    "$PY" -c 'import platform, os, torch, pydantic, kornia, cnnlab; print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), pydantic {pydantic.__version__}, kornia {kornia.__version__}, Python {platform.python_version()}, {os.cpu_count()} CPUs")'
    echo "commit: ${GPU_CHECK_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo 'unknown (set GPU_CHECK_COMMIT)')}"
  } | tee "$WORK/machine.txt" || return 1
  # The Keras peer on this image (torch backend, no TensorFlow): can its generator be imported?
  KERAS_BACKEND=torch "$PY" -c 'import keras; from keras._tf_keras.keras.preprocessing.image import ImageDataGenerator; print(f"keras {keras.__version__} ({keras.backend.backend()} backend): ImageDataGenerator importable without TensorFlow")' \
    | tee -a "$WORK/machine.txt" || say "keras: not importable here"
}

ORDER+=(setup)
started=$SECONDS
if setup; then STATUS[setup]=ok; else STATUS[setup]=FAILED; FAILED=1; fi
SPENT[setup]=$((SECONDS - started))
[ "${STATUS[setup]}" = ok ] || exit 1

if [[ " $PHASES " == *" tests "* ]]; then
  PYTEST_ARGS=(-x -q -p no:cacheprovider -rfE --junitxml "$WORK/tests.xml")
  if "$PY" -c 'import xdist' 2>/dev/null; then
    PYTEST_ARGS+=(-n "${GPU_CHECK_TEST_WORKERS:-8}" --dist loadfile)
  fi
  if "$PY" -c 'import pytest_timeout' 2>/dev/null; then PYTEST_ARGS+=(--timeout 150); fi
  limit=$(remaining)
  [ "$limit" -gt "$TEST_S" ] && limit=$TEST_S
  run_phase tests "$limit" "$PY" -m pytest "${PYTEST_ARGS[@]}" "${TESTS[@]}"
fi

if [[ " $PHASES " == *" augment "* ]]; then
  limit=$(remaining)
  [ "$limit" -gt 120 ] && limit=120
  run_phase augment "$limit" "$PY" -m bench.gpu_rows --only augment --out "$WORK/augment"
fi

if [[ " $PHASES " == *" train "* ]]; then
  for workload in "${WORKLOAD_LIST[@]}"; do
    run_phase "train-$workload" "$(remaining)" "$PY" -m bench.gpu_rows --only train \
      --workload "$workload" --datasets "$DATA" --out "$WORK/train-$workload"
  done
fi

if [[ " $PHASES " == *" speed "* ]]; then
  if [ -f "$SPEED_DATA/train.zip" ]; then
    run_phase speed "$(remaining)" "$PY" -m bench.gpu_speed --data "$SPEED_DATA" \
      --seeds "${GPU_CHECK_SPEED_SEEDS:-5}" --out "$WORK/speed"
  else
    ORDER+=(speed)
    STATUS[speed]="not run: no $SPEED_DATA/train.zip (make speed-data, carried on its own)"
  fi
fi

exit "$FAILED"
