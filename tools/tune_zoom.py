"""AP and time of the bottom-up zoom pass for several settings (how its defaults were chosen).

    python tools/tune_zoom.py [--ann ../shared/data/coco_person_train/person_keypoints.json]
                              [--limit 300] [--oks 0.5] SETTING [SETTING ...]

SETTING is FACTOR,MAX_SIZE,GROW,MARGIN[,HEIGHT]: the zoom factor, the size under which a person's
region is looked at again (network px), the region's growth (x the person's size) and margin
(network cells) (pose_core.bottomup.zoom_regions), and the base network height (default 256).
--oks is the OKS-NMS threshold of the merge. The defaults were chosen on the first 300
coco_person_train images, which the evaluation never reports as coco_val_dev AP.
"""
import argparse
import functools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pose_core.bottomup as bottomup  # noqa: E402
from pose_core.eval import DEFAULT_DATA_ROOT, evaluate  # noqa: E402
from pose_core.registry import DEFAULT_MODEL, load_pipeline  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("settings", nargs="+", metavar="SETTING")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--ann", default=str(DEFAULT_DATA_ROOT / "coco_person_train" / "person_keypoints.json"))
    p.add_argument("--limit", type=int, default=300)
    p.add_argument("--oks", type=float, default=bottomup.MULTI_SCALE_OKS_THRESHOLD)
    args = p.parse_args(argv)
    bottomup.MULTI_SCALE_OKS_THRESHOLD = args.oks
    default_regions = bottomup.zoom_regions
    for setting in args.settings:
        factor, max_size, grow, margin, *height = map(float, setting.split(","))
        bottomup.zoom_regions = functools.partial(default_regions, max_size=max_size, grow=grow,
                                                  margin_cells=margin)
        pipeline = load_pipeline(args.model, height=int(height[0]) if height else None, zoom=factor)
        r = evaluate(pipeline, args.ann, Path(args.ann).parent / "images", args.limit, progress=False)
        print(f"{setting} (oks {args.oks:g}): AP {r['AP']:.4f}  APm {r['APm']:.3f}  APl {r['APl']:.3f}  "
              f"{r['ms_per_image']:.1f} ms/image", flush=True)


if __name__ == "__main__":
    main()
