#!/usr/bin/env bash
# The GPU path, end to end, in a few minutes on a machine with a CUDA device:
# the device tests, then train + forget + evaluate on MNIST on cuda, then a small bench on
# cuda next to the same bench on the CPU, and the two tables.
# Usage (from the repository root, after `make venv`): bash benchmarks/gpu_check.sh [OUT_DIR]
set -euo pipefail
out=${1:-runs/gpu-check}
py=${PYTHON:-.venv/bin/python}
mu=("$py" -m miniunlearn.cli)
"$py" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no CUDA device visible to torch")'
"$py" -c 'import torch; print("torch", torch.__version__, "on", torch.cuda.get_device_name(0))'
"$py" -m pytest -q tests/test_device.py
"${mu[@]}" fetch mnist
rm -rf "$out" && mkdir -p "$out"
"${mu[@]}" train --dataset mnist --model logreg --out "$out/run" --history both --device cuda
"${mu[@]}" forget "$out/run" --ratio 0.1 --method mini --request-id gpu-mini --device cuda
"${mu[@]}" forget "$out/run" --ratio 0.05 --seed 1 --method deltagrad --request-id gpu-dg --device cuda
"${mu[@]}" evaluate "$out/run" --device cuda
for device in cuda cpu; do
  echo "== bench on $device"
  "${mu[@]}" bench --dataset mnist --model logreg --ratios 0.1,0.5 --methods retrain,warmstart,deltagrad,mini \
    --seeds 1 --epochs 200 --device "$device" --runs-dir "$out/bench-$device" --json "$out/bench-$device.json"
done
