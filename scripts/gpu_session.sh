#!/usr/bin/env bash
# Everything a session runs on the lent GPU machine, in as few calls as possible:
#
#   bash scripts/gpu_session.sh [STAGE ...]      (default: tests memory bridge bench)
#
# Stages: tests (every GPU test file, without -x, logs and JUnit XML), mosaic (the Mosaic
# GPU kernels' own tests, compiled: a call of its own beside tests), memory
# (benchmarks/memory.py), bridge (benchmarks/bridge_overhead.py), bench (the full
# benchmark, bf16 and fp32; BENCH_OPS=fwd,bwd,... for some of its ops: all eight take
# about 6 minutes on an H100), tiles (benchmarks/experiments/triton_tiles.py), gaps
# (benchmarks/experiments/gaps.py, the parts in GAPS_PARTS: default the plain kernels'
# tiles beside the peers), ab (the benchmark of each copy of the code in ab/, made by
# scripts/ab_prepare.sh, AB_ROUNDS times alternating, ours and the bridge only or the
# AB_IMPLS, BENCH_OPS and AB_SIZES to narrow it; benchmarks/ab_compare.py's table last),
# two (the two-GPU tests; needs a two-GPU machine). A stage that fails does not stop the
# next. Wheels the machine lacks (pytest, hypothesis, liger...) are carried in .whl/
# (ignored by git: name it in the device tool's carry, and ab/ for the ab stage) and
# installed under /tmp/site.
# STAGE_TIMEOUT=SECONDS stops a stage that runs longer (rc 124), so the summary still prints.
# Results go to $OUT; the last lines printed are a short summary of every stage.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-results}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
root="$PWD"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl >/dev/null
  export PYTHONPATH="/tmp/site:."
else
  export PYTHONPATH="."
fi
stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(tests memory bridge bench)
nvidia-smi --query-gpu=name,memory.total,clocks.max.memory --format=csv,noheader \
  >"$OUT/gpu.txt" 2>&1 || echo "no nvidia-smi" >"$OUT/gpu.txt"
summary=()

run_stage() {  # name, command...: runs it, logs to $OUT/NAME.log, notes the outcome
  local name="$1" start=$SECONDS rc
  shift
  timeout "${STAGE_TIMEOUT:-0}" "$@" >"$OUT/$name.log" 2>&1
  rc=$?
  summary+=("$(printf '%-8s rc=%-3s %4ss  %s' "$name" "$rc" $((SECONDS - start)) \
    "$(tail -n 1 "$OUT/$name.log" | cut -c1-100)")")
}

for stage in "${stages[@]}"; do
  case "$stage" in
    tests)
      # test_torch_bridge_direct.py compiles with the machine's own triton.
      gpu_tests=(tests/test_gpu.py tests/test_gpu_torch_bridge.py tests/test_torch_bridge_direct.py)
      for extra in tests/test_gpu_*.py; do
        [[ " ${gpu_tests[*]} " == *" $extra "* ]] || gpu_tests+=("$extra")
      done
      # Host-time tests first, on a quiet host (a long GPU run slows the host's calls).
      run_stage hosttime python3 -m pytest "${gpu_tests[@]}" -q -p no:cacheprovider -rfE \
        -m host_time --junitxml="$OUT/gpu-tests-host-time.xml"
      run_stage tests python3 -m pytest "${gpu_tests[@]}" -q -p no:cacheprovider -rfE \
        -m "not host_time" --junitxml="$OUT/gpu-tests.xml" ;;
    mosaic)  # the Mosaic GPU kernels' own tests, compiled (about 2.5 minutes; session 13:
      # they had never run on a GPU, and one of their tiles did not fit in shared memory)
      run_stage mosaic python3 -m pytest tests/test_kernel_mosaic_gpu.py -q -p no:cacheprovider \
        -rfE --junitxml="$OUT/gpu-tests-mosaic.xml" ;;
    memory) run_stage memory python3 benchmarks/memory.py --layers 4 --out "$OUT" ;;
    bridge) run_stage bridge python3 benchmarks/bridge_overhead.py --out "$OUT" ;;
    bench)
      run_stage bench python3 -m swiglu_jax.bench --sizes full --dtypes bfloat16,float32 \
        --out "$OUT" ${BENCH_OPS:+--ops "$BENCH_OPS"} ;;
    ab)  # each copy in ab/ (scripts/ab_prepare.sh), AB_ROUNDS rounds, alternating
      for round in $(seq "${AB_ROUNDS:-2}"); do
        for copy in ab/*/; do
          name="$(basename "$copy")"
          cd "$copy"  # python -m imports the copy: the current directory comes first
          run_stage "ab-$round-$name" python3 -m swiglu_jax.bench --sizes "${AB_SIZES:-full}" \
            --dtypes bfloat16,float32 --impls "${AB_IMPLS:-swiglu_jax:triton,torch_bridge}" \
            --out "$OUT/ab-$round-$name" ${BENCH_OPS:+--ops "$BENCH_OPS"}
          cd "$root"
        done
      done
      python3 benchmarks/ab_compare.py "$OUT" >"$OUT/ab.log" 2>&1
      # one archive of the rounds' logs and results: the device tool returns 8 files
      (cd "$OUT" && tar czf ab-rounds.tgz ab-*-*/ ab-*-*.log && rm -rf ab-*-*/ ab-*-*.log) ;;
    tiles) run_stage tiles python3 benchmarks/experiments/triton_tiles.py --small ;;
    gaps)
      run_stage gaps python3 benchmarks/experiments/gaps.py --out "$OUT" \
        --parts "${GAPS_PARTS:-perthread_fwd,perthread_bwd}" ;;
    two) run_stage two python3 -m pytest tests/test_sharding.py -q -p no:cacheprovider -k two_gpus ;;
    *) summary+=("$stage: unknown stage") ;;
  esac
done

echo "== $(cat "$OUT/gpu.txt")"
for stage in "${stages[@]}"; do
  log="$OUT/$stage.log"
  [ -f "$log" ] || continue
  case "$stage" in
    tests) grep -hE "^(FAILED|ERROR)" "$OUT/hosttime.log" "$log" | head -20 ;;
    mosaic) grep -hE "^(FAILED|ERROR)" "$log" | head -20 ;;
    bench | memory | bridge | tiles) tail -n 40 "$log" ;;
    ab) cat "$log" ;;
    gaps) grep -vE "^\s*$" "$log" | tail -n 60 ;;
  esac
done
printf '%s\n' "${summary[@]}"
