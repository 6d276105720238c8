#!/usr/bin/env bash
# One training slice on a lent GPU (the `device` tool), continuing the committed weights.
#
#   here:    python tools/pack_training_data.py --keep-samples     # -> cache/packed (git-ignored)
#   device:  run(command="bash tools/gpu_train_slice.sh ldlc-openpose-t6 8", carry=["cache/packed"],
#                timeout_s=600)
#   here:    copy the returned <model>.pt and <model>.progress.json over weights/, append the
#            returned training_log.csv rows to docs/training_log.csv, re-export the ONNX file
#            and measure AP with pose_core.eval (MANIFEST, README).
#
# MINUTES of training (default 8, so that start-up and the copy back fit a 10-minute call),
# with a cosine over this slice alone (--more-minutes). DEVICE=cpu (and PACKED=folder) run
# the same slice here.
set -euo pipefail
model=${1:?usage: gpu_train_slice.sh MODEL [MINUTES]}
minutes=${2:-8}
device=${DEVICE:-cuda}
out=${OUT:-out/gpu_slice}
packed=${PACKED:-cache/packed}
case $model in
    *-hwloss) script=train_topdown; batch=128 ;;
    *) script=train_bottomup; batch=64 ;;
esac
[ -f "$packed/sources.txt" ] || { echo "error: $packed/sources.txt missing: run tools/pack_training_data.py and carry cache/packed" >&2; exit 2; }
mkdir -p "$out"
workers=$(( $(nproc) > 2 ? $(nproc) - 2 : 1 ))
# shellcheck disable=SC2046  # sources.txt holds one "--source SPEC" per line
PYTHONUNBUFFERED=1 python3 -m pose_core.train.$script --model "$model" --device "$device" \
    --workers "$workers" --threads 2 --batch "$batch" \
    --data-root "$packed" $(cat "$packed/sources.txt") \
    --resume-weights --save-weights "$out/$model.pt" --more-minutes "$minutes" --ckpt-minutes 2 \
    --log "$out/training_log.csv" --eval-every-minutes 0 2>&1 | tee "$out/train.log"
