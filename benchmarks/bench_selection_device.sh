#!/usr/bin/env bash
# The selection targets of the speed issue on the device machine (16 cores): facility location at n = 10,000 for
# ours, apricot and submodlib with 1 and with 16 threads, dense n = 50,000 for all three (the 128 GiB machine holds
# the 50k x 50k matrix), and the 1M-point kNN path. Every run is its own process (bench_selection.py); JSON lines
# go to $OUT/selection.jsonl. Carry benchmarks/.cache/real_embeddings.npy (made here by `bench_selection.py embed`)
# and benchmarks/.cache/wheels (faiss-cpu, submodlib-py, apricot-select: `pip download` / `pip wheel`).
#   bash benchmarks/bench_selection_device.sh small   # n = 10,000 at 1 and 16 threads, 50k ours, 1M kNN ours
#   bash benchmarks/bench_selection_device.sh peers50k
#   ROUNDS=4 bash benchmarks/bench_selection_device.sh fl10k-rounds   # ours and apricot, 1 and 16 threads, alternating
#   bash benchmarks/bench_selection_device.sh fl10k-ab   # n = 10,000: this tree, benchmarks/.cache/before, apricot, x3
#   bash benchmarks/bench_selection_device.sh before-after   # n = 10,000 and the 1M kNN path (CPU and GPU), this
#     tree against an earlier commit unpacked in benchmarks/.cache/before (`git archive REV pipelines conceptkit
#     annotators schemas benchmarks/bench_selection.py | tar -x -C benchmarks/.cache/before`), in the same call
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
# into a folder of their own (the machine's Python is externally managed); apricot imports nose, unused here
python3 -m pip install -q --no-deps --target /tmp/benchsite benchmarks/.cache/wheels/*.whl 2>&1 | tail -2
[ -f /tmp/benchsite/nose.py ] || echo "" > /tmp/benchsite/nose.py
export PYTHONPATH=/tmp/benchsite${PYTHONPATH:+:$PYTHONPATH}
python3 -c "import faiss, apricot, submodlib; print('peers:', faiss.__version__)" 2>&1 | tail -1
threads() { export OMP_NUM_THREADS=$1 OPENBLAS_NUM_THREADS=$1 MKL_NUM_THREADS=$1 NUMBA_NUM_THREADS=$1 CONCEPTKIT_THREADS=$1; }
run() {  # threads, then bench_selection.py arguments
  local t=$1; shift
  threads "$t"
  local line
  line=$(timeout 540 python3 "${BENCH:-benchmarks/bench_selection.py}" "$@" 2>"$OUT/last.err" | grep '^{' | tail -1)
  echo "{\"threads\": $t, \"bench\": \"${BENCH:-now}\", \"args\": \"$*\", \"result\": ${line:-null}}" | tee -a "$OUT/selection.jsonl"
}
nproc > "$OUT/nproc.txt"
case "${1:-small}" in
  small)
    for t in 1 16; do for lib in ours apricot submodlib; do run $t fl --n 10000 --lib $lib; done; done
    run 16 knn --n 1000000 --k 10000 --lib ours
    ;;
  before-after)
    mkdir -p benchmarks/.cache/before/benchmarks/.cache
    ln -sf "$PWD/benchmarks/.cache/real_embeddings.npy" benchmarks/.cache/before/benchmarks/.cache/real_embeddings.npy
    for t in 1 16; do
      for lib in ours apricot submodlib; do run $t fl --n 10000 --lib $lib; done
      BENCH=benchmarks/.cache/before/benchmarks/bench_selection.py run $t fl --n 10000 --lib ours
    done
    run 16 knn --n 1000000 --k 10000 --lib ours --device cpu
    run 16 knn --n 1000000 --k 10000 --lib ours --device cuda
    BENCH=benchmarks/.cache/before/benchmarks/bench_selection.py run 16 knn --n 1000000 --k 10000 --lib ours
    ;;
  fl10k-ab)  # three rounds of this tree, an earlier one (benchmarks/.cache/before, as in before-after) and apricot
    mkdir -p benchmarks/.cache/before/benchmarks/.cache
    ln -sf "$PWD/benchmarks/.cache/real_embeddings.npy" benchmarks/.cache/before/benchmarks/.cache/real_embeddings.npy
    for r in 1 2 3; do for t in 1 16; do
      run $t fl --n 10000 --lib ours
      BENCH=benchmarks/.cache/before/benchmarks/bench_selection.py run $t fl --n 10000 --lib ours
      run $t fl --n 10000 --lib apricot
    done; done
    ;;
  fl10k-rounds)  # ${ROUNDS:-4} rounds of ours and the faster peer at 1 and 16 threads, alternating
    for r in $(seq "${ROUNDS:-4}"); do for t in 1 16; do for lib in ours apricot; do run $t fl --n 10000 --lib $lib; done; done; done
    ;;
  fl10k)  # ours and the faster peer only, and our dense 50k
    for t in 1 16; do for lib in ours apricot; do run $t fl --n 10000 --lib $lib; done; done
    BENCH_DENSE_GB=12 run 16 fl --n 50000 --lib ours
    ;;
  peers50k)
    BENCH_DENSE_GB=12 run 16 fl --n 50000 --lib ours
    BENCH_DENSE_GB=12 run 16 fl --n 50000 --lib apricot
    BENCH_DENSE_GB=12 run 16 fl --n 50000 --lib submodlib
    ;;
esac
