"""AP of the bottom-up decoding on ground-truth maps: the ceiling that the representation
(stride-8 maps at a network input height, the training Gaussians and PAFs, peak finding and
PAF grouping with their thresholds) puts on any bottom-up network, whatever its training.

    python tools/bottomup_ceiling.py [--height 256] [--ann ../shared/data/coco_val_dev/person_keypoints.json]

Each image goes through BottomUpPipeline's own preprocessing; instead of a network, its
annotated people (non-crowd, with keypoints) are rendered as the training targets
(pose_core.train.targets) on the network's grid and decoded as network maps are.
"""
import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pose_core.bottomup import BottomUpPipeline, _to_frame_pixels  # noqa: E402
from pose_core.eval import DEFAULT_ANN, load_ground_truth, people_to_coco_results, run_coco_eval  # noqa: E402
from pose_core.paf_grouping import decode_people  # noqa: E402
from pose_core.result import People  # noqa: E402
from pose_core.skeleton import coco_to_openpose, openpose_to_coco  # noqa: E402
from pose_core.train.targets import render_bottomup_targets  # noqa: E402

STRIDE = 8


def ground_truth_predictor(ann_file, height):
    """predict(frame, image id) -> COCO result records decoded from the image's rendered targets."""
    coco = load_ground_truth(ann_file)
    preprocess = BottomUpPipeline(runner=None, height=height, stride=STRIDE).preprocess

    def predict(frame, image_id):
        batch, (new_h, new_w) = preprocess(frame)
        h, w = frame.shape[:2]
        anns = [a for a in coco.imgToAnns[image_id] if not a.get("iscrowd") and a["num_keypoints"] > 0]
        if not anns:
            return []
        keypoints = np.array([a["keypoints"] for a in anns], np.float32).reshape(-1, 17, 3)
        # frame pixels -> network-input pixels (cv2.resize aligns pixel centres)
        keypoints[..., 0] = (keypoints[..., 0] + 0.5) * new_w / w - 0.5
        keypoints[..., 1] = (keypoints[..., 1] + 0.5) * new_h / h - 0.5
        heatmaps, pafs = render_bottomup_targets(coco_to_openpose(keypoints), batch.shape[2] // STRIDE,
                                                 batch.shape[3] // STRIDE, STRIDE)
        found, scores = decode_people(heatmaps.numpy(), pafs.numpy(), STRIDE, 1, (new_h, new_w))
        if not len(found):
            return []
        found = _to_frame_pixels(found, (new_h, new_w), (h, w))
        return people_to_coco_results(People.from_keypoints(openpose_to_coco(found), scores), image_id)

    return predict


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--height", type=int, default=256, help="network input height")
    parser.add_argument("--ann", type=Path, default=Path(DEFAULT_ANN))
    parser.add_argument("--limit", type=int)
    args = parser.parse_args(argv)
    result = run_coco_eval(ground_truth_predictor(args.ann, args.height), args.ann, args.ann.parent / "images",
                           args.limit, progress=False)
    print(result["table"], end="")
    print(f"ceiling at height {args.height}: AP={result['AP']:.3f}")


if __name__ == "__main__":
    main()
