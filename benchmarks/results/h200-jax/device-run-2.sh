#!/bin/bash
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD KERAS_BACKEND=jax MNIST99_DATA=$PWD/.gpu/mnist PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3
run() { name=$1; limit=$2; shift 2
  timeout $limit python3 benchmarks/gpu.py -c configs/default.yaml -c configs/gpu.yaml --out $OUT/$name.jsonl "$@" > $OUT/$name.log 2>&1
  echo "== $name rc=$?"; grep -E '^\{|Error|error' $OUT/$name.log | cut -c1-700 | tail -8; }
# one model twice: a cold XLA compile, then the same programs from JAX's persistent cache
run cold 110 --skip-baseline --set ensemble.size=1 --compile-cache /tmp/xla-cache
run warm 110 --skip-baseline --set ensemble.size=1 --compile-cache /tmp/xla-cache
# the ensemble again with other seeds (4, 5, 6): is 99.72% a lucky draw?
run seeds456 200 --skip-baseline --set seed=4
