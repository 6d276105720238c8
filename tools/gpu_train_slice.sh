#!/usr/bin/env bash
# One training slice on a lent GPU (the `device` tool), continuing the committed weights.
#
#   here:    python tools/pack_training_data.py --training-crop 256 --format webp --quality 90 \
#                --keep-samples --hold-out coco_person_train/person_keypoints.json:300 \
#                --budget-mb 46                                   # -> cache/packed (git-ignored)
#   device:  run(command="bash tools/gpu_train_slice.sh ldlc-openpose-t6 8", carry=["cache/packed"],
#                timeout_s=600)
#   here:    evaluate the returned snapshots on the held-out images (pose_core.eval --ann
#            .../coco_person_train/person_keypoints.json --limit 300), keep the best or an average
#            of the good ones, copy it and <model>.progress.json over weights/, append the log rows
#            (training_log.csv in the returned logs.tgz, with train.log) to docs/training_log.csv,
#            re-export the ONNX file and measure AP with pose_core.eval (MANIFEST, README).
#
# MINUTES of training (default 8, so that start-up and the copy back fit a 10-minute call),
# with a cosine over this slice alone (--more-minutes). Further arguments go to the training
# script and override the ones here (e.g. --lr 6e-5 --snapshot-minutes 1). The weights are also
# kept at each quarter of the slice (<model>.<images seen>.pt); the device tool returns at most 8
# files, 64 MiB in all, so at most five 9.7 MiB snapshots besides the final weights.
# Pack at --training-crop: crops cut from images shrunk to 256 px are blurrier than training
# takes them from the source, and that costs AP (stop 17, tools/pack_fidelity.py: 120 CPU steps
# on the same crops, 0.196 from the source images against 0.182 from a 256 px WebP pack). Two
# H200 slices on that pack, at lr 3e-4 and 6e-5, fell from 0.196 to 0.165-0.175 by their first
# snapshot, as stop 14's did: restart gently (lower lr, longer warm-up) and judge early snapshots.
# DEVICE=cpu (and PACKED=folder) run the same slice here.
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
# One file for the logs: the device tool returns at most 8 files.
tar czf "$out/logs.tgz" -C "$out" train.log training_log.csv && rm "$out/train.log" "$out/training_log.csv"
