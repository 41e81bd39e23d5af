#!/usr/bin/env bash
# Reproduces every table and plot in docs/results.md (on 2 cores). Each sweep runs its
# (seed, ratio) cells and shadow models as JOBS parallel tasks (default 2, one per core), each
# torch process on one thread; all methods of one cell run in the same process, so their
# times are comparable. The two chains run one after the other.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
OUT=${OUT:-docs/results}
JOBS=${JOBS:-2}
mkdir -p "$OUT"
bench() { name=$1; shift; "$BIN/miniunlearn" -q bench --threads 1 --jobs "$JOBS" --json "$OUT/$name.json" \
  --plots "$OUT/$name" "$@" | tee "$OUT/$name.md"; }

# Tables recorded before DeltaGrad's default initial scale became the authors' s.y/s.s keep
# the textbook y.y/s.y they were measured with (docs/results.md says which).
YY=(-o deltagrad:b0=yy/sy)
# Tables of MNIST and Fashion-MNIST logistic regression recorded with the Nyström curvature
# sketch, before those runs recorded their input-subspace Hessian by default, keep the sketch.
SK=(--curvature-basis 0)

chain_a() {
  bench mnist-logreg-peer --dataset mnist --model logreg --ratios 0.1,0.5,0.9 --methods retrain,warmstart,mini,newton --seeds 3 \
    "${SK[@]}"
  "$BIN/python" benchmarks/frontier.py --dataset mnist --threads 1 --out "$OUT/frontier-mnist"
  "$BIN/python" benchmarks/sketch_variants.py --dataset mnist --threads 1 > "$OUT/sketch-variants-mnist.md"
  bench mnist-logreg --dataset mnist --model logreg --ratios 0.01,0.1,0.3,0.5 --methods retrain,deltagrad,mini --seeds 3 \
    "${YY[@]}" "${SK[@]}"
  bench mnist-logreg-dgpaper --dataset mnist --model logreg --preset deltagrad-paper --ratios 0.01,0.1,0.2,0.5,0.7 \
    --methods retrain,deltagrad,mini --seeds 3 "${SK[@]}"
  bench mnist-logreg-dgpaper-yy --dataset mnist --model logreg --preset deltagrad-paper --ratios 0.01,0.1,0.2,0.5,0.7 \
    --methods retrain,deltagrad --seeds 3 "${YY[@]}" "${SK[@]}"
  "$BIN/python" benchmarks/linear_response.py --ratios 0.01,0.2,0.5 --threads 1 > "$OUT/linear-response.md"
  bench mnist-mlp-leaky --dataset mnist --model mlp --preset leaky --ratios 0.1,0.3,0.5 --seeds 3 \
    --methods retrain,none,finetune,neggrad,rl,salun,scrub,l1sparse,mini --attacks population,ulira --runs-dir runs/leaky
  "$BIN/python" benchmarks/rewind_variants.py --ratios 0.1,0.3,0.5 --seeds 3 --threads 1 > "$OUT/rewind-variants.md"
}
chain_b() {
  # HIGGS scale: 10.5 million training rows generated on first use (about 35 minutes on one core);
  # one cell at a time (--jobs 1, the later flag wins): a cell holds about 5 GiB
  bench synthetic-higgs --dataset synthetic-higgs --model logreg --ratios 0.1,0.5,0.9 \
    --methods retrain,warmstart,nystrom,exact-newton,mini --seeds 1 --jobs 1
  bench adult-logreg-peer --dataset adult --model logreg --ratios 0.1,0.5,0.9 \
    --methods retrain,warmstart,deltagrad,mini,newton --seeds 3 "${YY[@]}"
  "$BIN/python" benchmarks/frontier.py --dataset adult --threads 1 --out "$OUT/frontier-adult"
  bench mnist-logreg-ulira --dataset mnist --model logreg --ratios 0.1,0.3,0.5 --methods retrain,deltagrad,mini \
    --seeds 1 --attacks population,ulira "${YY[@]}" "${SK[@]}"
  bench mnist-logreg-baselines --dataset mnist --model logreg --ratios 0.7 \
    --methods retrain,deltagrad,mini,finetune,neggrad,newton --seeds 1 "${YY[@]}" "${SK[@]}"
  bench fashion-logreg --dataset fashion-mnist --model logreg --ratios 0.1,0.3,0.5 --methods retrain,deltagrad,mini --seeds 3 \
    "${SK[@]}"
  bench adult-logreg --dataset adult --model logreg --ratios 0.01,0.1,0.3,0.5 --methods retrain,deltagrad,mini --seeds 3 \
    "${YY[@]}"
  bench mnist-mlp --dataset mnist --model mlp --ratios 0.1,0.3,0.5 --methods retrain,none,finetune,deltagrad,mini --seeds 3
  bench fashion-cnn-leaky --dataset fashion-mnist --model cnn --preset leaky --ratios 0.1,0.3,0.5 --seeds 1 \
    --methods retrain,none,finetune,neggrad,rl,salun,scrub,l1sparse,mini --runs-dir runs/leaky
  "$BIN/python" benchmarks/deletion_sequence.py | tee "$OUT/deletion-sequence.md"
  "$BIN/python" benchmarks/mini_variants.py | tee "$OUT/mini-variants.md"
}
stream() { name=$1; shift; "$BIN/miniunlearn" -q bench --threads 1 --json "$OUT/$name.json" \
  --plots "$OUT/$name" "$@" | tee "$OUT/$name.md"; }
chain_c() {
  # the flagship against its strongest peers, recording counted (docs/results.md, first section)
  bench mnist-logreg-peers --dataset mnist --model logreg --ratios 0.1,0.5,0.9 --methods retrain,warmstart,nystrom,mini --seeds 3
  # the history-free peer given the input-subspace structure, formed on the request (two settings)
  bench mnist-logreg-peer-subspace-64 --dataset mnist --model logreg --ratios 0.1,0.5,0.9 --methods retrain,nystrom,mini --seeds 3 \
    -o nystrom:basis=64 -o nystrom:rows=2048
  bench mnist-logreg-peer-subspace-32 --dataset mnist --model logreg --ratios 0.1,0.5,0.9 --methods nystrom --seeds 3 \
    -o nystrom:basis=32 -o nystrom:rows=512
  "$BIN/python" benchmarks/input_subspace.py > "$OUT/input-subspace.md"
  bench adult-logreg-peers --dataset adult --model logreg --ratios 0.1,0.5,0.9 --methods retrain,warmstart,nystrom,exact-newton,mini --seeds 3
  bench adult-logreg-peer-subspace-64 --dataset adult --model logreg --ratios 0.1,0.5,0.9 --methods retrain,nystrom,mini --seeds 3 \
    -o nystrom:basis=64 -o nystrom:rows=512
  bench adult-logreg-peer-subspace-32 --dataset adult --model logreg --ratios 0.1,0.5,0.9 --methods retrain,nystrom,mini --seeds 3 \
    -o nystrom:basis=32 -o nystrom:rows=256
  bench mnist-logreg-peer-subspace-16 --dataset mnist --model logreg --ratios 0.1,0.5,0.9 --methods nystrom --seeds 3 \
    -o nystrom:basis=16 -o nystrom:rows=256
  # the grids the input-subspace peer's settings were picked from
  "$BIN/python" benchmarks/peer_grid.py --dataset mnist --threads 1 > "$OUT/peer-grid-mnist.md"
  "$BIN/python" benchmarks/peer_grid.py --dataset adult --threads 1 > "$OUT/peer-grid-adult.md"
  bench mnist-logreg-exact --dataset mnist --model logreg --ratios 0.1,0.5,0.9 --methods retrain,mini --seeds 3 \
    --exact-curvature-dim 8000
  "$BIN/python" benchmarks/request_passes.py --dataset mnist --seeds 0,1,2 --threads 1 > "$OUT/request-passes-mnist.md"
  "$BIN/python" benchmarks/request_passes.py --dataset adult --seeds 0,1,2 --threads 1 > "$OUT/request-passes-adult.md"
  "$BIN/python" benchmarks/kfac_preconditioner.py mnist 0 > "$OUT/kfac-preconditioner-table.md"
  # streams of single-sample requests through the deletion workflow
  stream stream-adult --dataset adult --model logreg --stream 100
  stream stream-mnist --dataset mnist --model logreg --stream 100
  stream stream-mnist-tol0.01 --dataset mnist --model logreg --stream 100 -o mini:small_request_tol=0.01
  # (stream-mnist-small.json was measured with an earlier rule of small_request_below: docs/results.md)
  stream stream-higgs --dataset synthetic-higgs --model logreg --stream 20
  stream stream-mnist-exact --dataset mnist --model logreg --stream 100 --exact-curvature-dim 8000
  # what the certificate's largest input norm costs a request, read in float64 against summed in float32
  "$BIN/python" benchmarks/certificate_norm.py > "$OUT/certificate-norm.md"
  # where a single-sample request's seconds go, and what forming a Gram matrix costs three ways
  "$BIN/python" benchmarks/request_time.py > "$OUT/request-time.md"
  # a queue of 1,000 single-sample requests served by one serve (one batch)
  "$BIN/miniunlearn" -q bench --dataset mnist --model logreg --stream 1000 --queue --threads 1 "${SK[@]}" \
    --json "$OUT/queue-mnist.json" | tee "$OUT/queue-mnist.md"
  # certified removal at epsilon 0.1 / 1 / 10: accuracy cost and a stream of 100 requests each
  "$BIN/python" benchmarks/certified_removal.py --out "$OUT/certified-removal.md"
  # Guo et al.'s Newton removal and its data-dependent bound on the same run and stream
  "$BIN/python" benchmarks/guo_newton_bound.py --out "$OUT/guo-newton-bound.md"
  # networks: the history-free peer, 10 to 90 %, and SCRUB at its authors' optimiser
  bench mnist-mlp-leaky-fast --dataset mnist --model mlp --preset leaky --ratios 0.1,0.3,0.5,0.7,0.9 --seeds 3 \
    --methods retrain,none,retrain-fast,mini --runs-dir runs/leaky
  bench mnist-mlp-leaky-fast-ulira --dataset mnist --model mlp --preset leaky --ratios 0.1,0.5,0.9 --seeds 1 \
    --methods retrain,none,retrain-fast,mini --attacks population,ulira --runs-dir runs/leaky
  bench mnist-mlp-leaky-fast-3seeds --dataset mnist --model mlp --preset leaky --ratios 0.1,0.5,0.9 --seeds 3 \
    --methods retrain,none,retrain-fast,mini --attacks population,ulira --runs-dir runs/leaky
  # the per-example privacy score against the original model on every seed (docs/results.md)
  bench mnist-mlp-leaky-privacy --dataset mnist --model mlp --preset leaky --ratios 0.1,0.5,0.9 --seeds 3 \
    --methods retrain,none --attacks population,ulira --runs-dir runs/leaky
  bench mnist-mlp-leaky-scrub --dataset mnist --model mlp --preset leaky --ratios 0.1,0.3,0.5,0.7,0.9 --seeds 3 \
    --methods retrain,scrub --runs-dir runs/leaky
  # the same MLP trained with momentum 0.9 in 20 epochs; and the former 15 % replay budget on it
  bench mnist-mlp-leaky-momentum --dataset mnist --model mlp --preset leaky-momentum --ratios 0.1,0.5,0.9 --seeds 3 \
    --methods retrain,none,retrain-fast,mini --attacks population,ulira --runs-dir runs/leaky
  bench mnist-mlp-leaky-momentum-15 --dataset mnist --model mlp --preset leaky-momentum --ratios 0.1,0.5,0.9 \
    --seeds 3 --methods retrain,retrain-fast,mini -o mini:replay_fraction=0.15 -o retrain-fast:fraction=0.15 \
    --runs-dir runs/leaky
  # the baselines tuned without the retrained model, on both MLP recipes
  bench mnist-mlp-leaky-tuned --dataset mnist --model mlp --preset leaky --ratios 0.1,0.5,0.9 --seeds 3 \
    --methods retrain,none,finetune,neggrad,rl,salun,scrub,l1sparse,mini --attacks population,ulira \
    --tune-baselines --runs-dir runs/leaky
  bench mnist-mlp-leaky-momentum-tuned --dataset mnist --model mlp --preset leaky-momentum --ratios 0.1,0.5,0.9 \
    --seeds 3 --methods retrain,none,finetune,neggrad,rl,salun,scrub,l1sparse,mini --attacks population,ulira \
    --tune-baselines --runs-dir runs/leaky
  # SCRUB's rows again after its ascent was cut to each epoch's min-steps (they collapsed at 90 %)
  bench mnist-mlp-leaky-tuned-scrub --dataset mnist --model mlp --preset leaky --ratios 0.1,0.5,0.9 \
    --seeds 3 --methods retrain,none,scrub --attacks population,ulira --tune-baselines --runs-dir runs/leaky
  bench mnist-mlp-leaky-momentum-tuned-scrub --dataset mnist --model mlp --preset leaky-momentum --ratios 0.1,0.5,0.9 \
    --seeds 3 --methods retrain,none,scrub --attacks population,ulira --tune-baselines --runs-dir runs/leaky
  # the CNN on both recipes, 10 to 90 %, both attacks
  bench fashion-cnn-leaky-fast --dataset fashion-mnist --model cnn --preset leaky --ratios 0.1,0.5,0.9 --seeds 3 \
    --methods retrain,none,retrain-fast,mini --attacks population,ulira --runs-dir runs/leaky
  bench fashion-cnn-leaky-momentum --dataset fashion-mnist --model cnn --preset leaky-momentum --ratios 0.1,0.5,0.9 \
    --seeds 3 --methods retrain,none,retrain-fast,mini --attacks population,ulira --runs-dir runs/leaky
  bench fashion-cnn-leaky-refill --dataset fashion-mnist --model cnn --preset leaky --retrain-batches refill \
    --ratios 0.1,0.5,0.9 --seeds 3 --methods retrain,none,retrain-fast,mini --attacks population,ulira \
    --runs-dir runs/leaky
  # the same against retraining in full batches of the retain set (kept batches collapse at 90 %)
  bench fashion-cnn-leaky-momentum-refill --dataset fashion-mnist --model cnn --preset leaky-momentum \
    --retrain-batches refill --ratios 0.1,0.5,0.9 --seeds 3 --methods retrain,none,retrain-fast,mini \
    --attacks population,ulira --runs-dir runs/leaky
  bench fashion-cnn-leaky-momentum-refill-50 --dataset fashion-mnist --model cnn --preset leaky-momentum \
    --retrain-batches refill --ratios 0.1,0.5,0.9 --seeds 3 --methods retrain,mini -o mini:replay_fraction=0.5 \
    --runs-dir runs/leaky
  bench fashion-cnn-leaky-tuned --dataset fashion-mnist --model cnn --preset leaky --ratios 0.1,0.5,0.9 --seeds 1 \
    --methods retrain,none,finetune,neggrad,rl,salun,scrub,l1sparse,mini --tune-baselines --runs-dir runs/leaky
  bench fashion-cnn-leaky-momentum-tuned --dataset fashion-mnist --model cnn --preset leaky-momentum \
    --retrain-batches refill --ratios 0.1,0.5,0.9 --seeds 1 \
    --methods retrain,none,finetune,neggrad,rl,salun,scrub,l1sparse,mini --tune-baselines --runs-dir runs/leaky
  bench fashion-cnn-leaky-tuned-scrub --dataset fashion-mnist --model cnn --preset leaky --ratios 0.1,0.5,0.9 --seeds 1 \
    --methods retrain,none,scrub --tune-baselines --runs-dir runs/leaky
  # the replay's rate and budget across models
  "$BIN/python" benchmarks/rewind_variants.py --ratios 0.1,0.5,0.9 --seeds 3 --threads 1 \
    --variants default,rate-1,rate-0.5 > "$OUT/rewind-rates-mlp.md"
  "$BIN/python" benchmarks/rewind_variants.py --preset leaky-momentum --ratios 0.1,0.5,0.9 --seeds 3 --threads 1 \
    --variants default,rate-1,rate-0.5 > "$OUT/rewind-rates-mlp-momentum.md"
  "$BIN/python" benchmarks/rewind_variants.py --dataset fashion-mnist --model cnn --ratios 0.1,0.5 --seeds 1 \
    --threads 1 --variants default,rate-0.5,rate-0.15,scratch,scratch-0.15,budget-60,budget-60-rate-0.5 \
    > "$OUT/rewind-variants-cnn.md"
  # retraining's own noise floor (another batch order) beside the default and a lower rate
  "$BIN/python" benchmarks/rewind_variants.py --dataset fashion-mnist --model cnn --ratios 0.1,0.5,0.9 --seeds 3 \
    --threads 1 --noise-floor --variants default,budget-60-rate-0.5,budget-80-rate-0.5 > "$OUT/rewind-noise-floor-cnn.md"
  "$BIN/python" benchmarks/rewind_variants.py --ratios 0.1,0.5,0.9 --seeds 3 --threads 1 --noise-floor \
    --variants default,budget-60-rate-0.5 > "$OUT/rewind-noise-floor-mlp.md"
  "$BIN/python" benchmarks/rewind_variants.py --preset leaky-momentum --ratios 0.1,0.5,0.9 --seeds 3 --threads 1 \
    --noise-floor --variants default,budget-60-rate-0.5 > "$OUT/rewind-noise-floor-mlp-momentum.md"
  # the rate capped by the batch Hessian's sharpness at the rewind point
  "$BIN/python" benchmarks/replay_sharpness.py > "$OUT/replay-sharpness.md"
  "$BIN/python" benchmarks/rewind_variants.py --dataset fashion-mnist --model cnn --ratios 0.1,0.5,0.9 --seeds 3 \
    --threads 1 --variants default,sharpness-cap,scratch-sharpness-cap > "$OUT/rewind-sharpness-cap-cnn.md"
  "$BIN/python" benchmarks/rewind_variants.py --ratios 0.1,0.5,0.9 --seeds 3 --threads 1 \
    --variants default,sharpness-cap > "$OUT/rewind-sharpness-cap-mlp.md"
  # short replays beyond mini's options on the momentum CNN (larger batches, later start, distillation, Adam)
  "$BIN/python" benchmarks/replay_limits.py --seeds 3 --threads 2 > "$OUT/replay-limits-cnn-momentum.md"
}
chain_a > "$OUT/chain_a.log" 2>&1
chain_b > "$OUT/chain_b.log" 2>&1
chain_c > "$OUT/chain_c.log" 2>&1
