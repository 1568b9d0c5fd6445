#!/usr/bin/env bash
# The device check: every GPU benchmark in one prepared run (about 8 minutes on an H100/H200).
#
#   bash benchmarks/gpu_suite.sh OUTDIR [HYBRID_MODEL_DIR CORPUS_ROOT]
#
# In order, each under its own time limit, so that one hang cannot eat the lease:
#   gpu_check        every tiny preset: bf16-autocast training steps and decoding; RTFx of the encoder-only
#                    CTC preset (asr_ctc_tiny) at batch 64 x 10 s
#   encoder_eff      encoder FLOP/s vs a matching bf16 matmul (batch 64 x 10 s)
#   ar_fp32          zoo vs transformers generate, Whisper-tiny shapes, fp32 (tokens compared)
#   ctc_vs_ar        CTC vs AR (and, for an asr_maskctc_* model, Mask-CTC) decoding of a trained hybrid, short
#                    and 3-min long-form (fp32)
#   speculative_asr  copy-drafted speculative vs plain greedy on the same hybrid (fp32, identity checked)
#   parallel         Mask-Predict vs AR on the toy reversal task (fp32)
#   ar_bf16          ar_decoding again under bf16 autocast
#   ar_compile       ar_decoding with the zoo side compiled (fixed shapes, CUDA graphs), fp32
# The two trained-model steps need HYBRID_MODEL_DIR (an asr_hybrid_* or asr_maskctc_* directory, e.g. the
# runs/asr-maskctc2k-mlm16k/model of BENCHMARKS.md) and the root of its corpus
# (manifests, test_unseen audio and the cached 3-min long-form file); without them they are skipped.
# `benchmarks/stage_gpu_suite.py --model DIR --out .gpu` stages both (~50 MB) as .gpu/model and .gpu/corpus.
# Logs, JSON and PNGs go to OUTDIR; a summary of exit codes and times is printed last.
# ONLY="gpu_check parallel" runs just those steps.
set -u
out=${1:?usage: gpu_suite.sh OUTDIR [HYBRID_MODEL_DIR CORPUS_ROOT]}
model=${2:-}
corpus=${3:-}
py=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}"
summary=()

step() {  # step NAME LIMIT_S COMMAND...
    local name=$1 limit=$2 t0=$SECONDS rc
    shift 2
    if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]]; then return; fi
    echo "=== $name (limit ${limit}s): $*"
    timeout "$limit" "$@" >"$out/$name.log" 2>&1
    rc=$?
    grep -v -E "it/s\]|s/it\]" "$out/$name.log" | tail -n 30
    summary+=("$name rc=$rc $((SECONDS - t0))s")
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee "$out/device.txt"
$py -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" \
    | tee -a "$out/device.txt"
step gpu_check 110 $py benchmarks/gpu_check.py --device cuda --out "$out/gpu_check.json"
step encoder_eff 50 $py benchmarks/encoder_efficiency.py --device cuda --batch 64 --seconds 10 --repeats 10 \
    --out "$out/encoder_efficiency.json"
step ar_fp32 75 $py benchmarks/ar_decoding.py --device cuda --repeats 3 --out "$out/ar_fp32"
if [ -n "$model" ]; then
    step ctc_vs_ar 90 $py benchmarks/ctc_vs_ar.py --model "$model" --corpus "$corpus" --device cuda --limit 96 \
        --mask-ctc-iterations 1 3 --mask-ctc-threshold 0.5 0.999 --out "$out/ctc_vs_ar"
    step speculative_asr 60 $py benchmarks/speculative_asr.py --model "$model" --corpus "$corpus" --device cuda \
        --limit 48 --repeats 2 --out "$out/speculative_asr.json"
fi
step parallel 120 $py benchmarks/parallel.py --device cuda --out "$out/parallel"
step ar_bf16 75 $py benchmarks/ar_decoding.py --device cuda --precision bf16 --repeats 3 --out "$out/ar_bf16"
step ar_compile 90 $py benchmarks/ar_decoding.py --device cuda --compile --repeats 3 --out "$out/ar_compile"
printf '%s\n' "${summary[@]}" | tee "$out/summary.txt"
