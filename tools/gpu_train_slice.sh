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
# with a cosine over this slice alone (--more-minutes). Further arguments go to the training
# script and override the ones here (e.g. --batch 128 --lr 1e-3). The weights are also kept at
# each quarter of the slice (<model>.<images seen>.pt): evaluate them here and keep the best, since
# an H200 sees about 650 crops/s and overfits a 64 MiB pack within minutes (stop 14: 8 minutes,
# 86 passes over 5,172 samples, train AP 0.26 and val 0.150). DEVICE=cpu (and PACKED=folder) run
# the same slice here.
set -euo pipefail
model=${1:?usage: gpu_train_slice.sh MODEL [MINUTES [TRAINING ARGS...]]}
minutes=${2:-8}
shift $(( $# < 2 ? $# : 2 ))
device=${DEVICE:-cuda}
out=${OUT:-out/gpu_slice}
packed=${PACKED:-cache/packed}
case $model in
    *-hwloss) script=train_topdown; batch=128 ;;
    *) script=train_bottomup; batch=128 ;;
esac
[ -f "$packed/sources.txt" ] || { echo "error: $packed/sources.txt missing: run tools/pack_training_data.py and carry cache/packed" >&2; exit 2; }
mkdir -p "$out"
workers=$(( $(nproc) > 2 ? $(nproc) - 2 : 1 ))
# shellcheck disable=SC2046  # sources.txt holds one "--source SPEC" per line
PYTHONUNBUFFERED=1 python3 -m pose_core.train.$script --model "$model" --device "$device" \
    --workers "$workers" --threads 2 --batch "$batch" \
    --data-root "$packed" $(cat "$packed/sources.txt") \
    --resume-weights --save-weights "$out/$model.pt" --more-minutes "$minutes" --ckpt-minutes 2 \
    --snapshot-minutes "$(awk "BEGIN {print $minutes / 4}")" \
    --log "$out/training_log.csv" --eval-every-minutes 0 "$@" 2>&1 | tee "$out/train.log"
