#!/usr/bin/env bash
# One device call for the speed issue's measurements left open on 2026-12-08 (the device was not lent that
# session): the GPU annotation path with the packed score layout against the list layout (each with plain encode
# in the same process), then facility location at n = 10,000 against apricot at 1 and 16 threads (the sixth
# round's compiled heap loop). Everything fits the 64 MiB carry: the fp16 model (45 MB), pydantic's wheels (.whl),
# and benchmarks/.cache/dev with apricot's wheel and the real-text embeddings as float16 (12 MB, widened to
# float32 there, so the same points for every library in the call). Prepare here:
#   python benchmarks/bench_annotate.py gpu-model; python benchmarks/bench_selection.py embed
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_17_x86_64 -d .whl pydantic==2.12.5 pydantic-core==2.41.5 annotated-types==0.7.0 \
#     typing-inspection==0.4.2
#   mkdir -p benchmarks/.cache/dev && pip wheel --no-deps -w benchmarks/.cache/dev apricot-select==0.6.1
#   python -c "import numpy as np; np.save('benchmarks/.cache/dev/real16.npy',
#     np.load('benchmarks/.cache/real_embeddings.npy').astype(np.float16))"
# and run it with carry [".whl", "benchmarks/.cache/gpu_model", "benchmarks/.cache/dev"]:
#   bash benchmarks/bench_device_rerun.sh
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
  .whl/*.whl benchmarks/.cache/dev/*.whl || exit 1
[ -f /tmp/site/nose.py ] || echo "" > /tmp/site/nose.py  # apricot imports nose, unused here
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader; nproc
python3 -c "import numpy as np; np.save('benchmarks/.cache/real_embeddings.npy',
  np.load('benchmarks/.cache/dev/real16.npy').astype(np.float32))"
for layout in packed list packed; do
  echo "== GPU annotation path, $layout scores, $(date -u +%H:%M:%S)"
  timeout 200 python3 benchmarks/bench_annotate_pipeline_gpu.py --score-layout "$layout" \
    --json "$OUT/gpu-$layout-$(date +%s).json" 2>&1 | grep -E '^\| the|^\| plain|^stages|Error'
done
run() {  # threads, then bench_selection.py arguments; one JSON line per run in $OUT/fl.jsonl
  local t=$1; shift
  export OMP_NUM_THREADS=$t OPENBLAS_NUM_THREADS=$t MKL_NUM_THREADS=$t NUMBA_NUM_THREADS=$t CONCEPTKIT_THREADS=$t
  echo "$t $* $(timeout 60 python3 benchmarks/bench_selection.py "$@" 2>/dev/null | grep '^{' | tail -1)" | tee -a "$OUT/fl.jsonl"
}
for r in 1 2 3; do for t in 1 16; do for lib in ours apricot; do run $t fl --n 10000 --lib $lib; done; done; done
