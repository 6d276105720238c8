"""Pseudo-label the training images with the MoveNet teacher (MultiPose + Thunder).

    nice -n 10 .venv/bin/python tools/pseudo_label.py [--data ../shared/data] [--sources har15 ...]

writes one COCO keypoint file per source to cache/pseudo/<source>.json. Images keep
file_name relative to the source's image folder. Each person has bbox, area, num_keypoints,
keypoints (v=2 where the teacher's confidence >= --min-conf, else 0) and the extra fields
"keypoint_scores" (17 floats) and "teacher_score". Real labels take precedence for the
joints they label (coco_mini_train's keypoints, lspet's 12 LSP body joints; score 1.0 there),
and a labelled person is always refined by Thunder on its own box, even when MultiPose misses it.
LSPET labels are first checked against the teacher: mirrored when they swap left and right,
rescaled when they are in the original image's pixels, dropped when they match nothing.
COCO people without keypoints and crowd boxes stay as keypoint-free boxes (to mask in training)
unless the teacher finds the person. Prints statistics per source as one JSON line.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
from pose_core.registry import TEACHER_DIR  # noqa: E402
from pose_core.skeleton import COCO_FLIP_INDEX, COCO_KEYPOINTS, COCO_SKELETON, NUM_KEYPOINTS  # noqa: E402
from pose_core.teacher import MoveNetMultiPose, MoveNetTeacher, MoveNetThunder  # noqa: E402
from pose_core.tracking import box_iou, pose_similarity  # noqa: E402

SOURCES = ("coco_mini_train", "human_seg", "jhmdb_frames", "lspet", "har15")   # smallest first
# LSP joint index -> COCO index; the neck and the head top have no COCO keypoint.
LSP_TO_COCO = {0: 16, 1: 14, 2: 12, 3: 11, 4: 13, 5: 15, 6: 10, 7: 8, 8: 6, 9: 5, 10: 7, 11: 9}
# COCO's area is the segment area; the median segment / box ratio on COCO persons is 0.51.
SEGMENT_AREA_PER_BOX = 0.51
SAME_PERSON_SIMILARITY = 0.4   # OKS/IoU mix above which a detection is a labelled person
SAME_BOX_IOU = 0.5             # IoU above which a detection covers an unlabelled COCO box
LSP_BOX_MARGIN = 0.1           # LSP joints miss the face and hands: widen their extent a bit
# LSPET labels are noisy. Some swap left and right (on 60 images, 7 matched Thunder about 10x
# better mirrored): they are mirrored when that halves their distance to the teacher. Images
# stored at the 400 px cap were downscaled without their joints (on 300 of them the labels
# matched the teacher after scaling by a median 1.20, 5% to 95%: 1.00 to 1.85; on 150 smaller
# images by 1.00): their labels are scaled by the fit, or dropped when nothing fits.
MIRRORED_DISTANCE_RATIO = 0.5
LSPET_STORED_MAX_SIDE = 400
LSPET_SCALE_TOLERANCE = 0.03
LSPET_FIT_MAX_ERROR = 0.1      # mean label-teacher distance / person size after the fit
FIT_MIN_CONFIDENCE = 0.3       # teacher joints used in a fit
FIT_MIN_JOINTS = 4


def multipose_size(height, width):
    """MultiPose input size for an image: its longer side rounded down to 32s, within 256..384,
    so that small images (har15's are about 275 x 183) are not upscaled past 256."""
    return int(min(max(max(height, width) // 32 * 32, 256), 384))


# ----------------------------------------------------------------- sources
def real_person(keypoints, box, iscrowd=0, noisy_labels=False):
    """A labelled person: keypoints (17, 3) x, y, COCO v (0 = no label), box x1y1x2y2."""
    return {"keypoints": np.asarray(keypoints, np.float32), "box": np.asarray(box, np.float32),
            "iscrowd": int(iscrowd), "noisy_labels": noisy_labels}


def lsp_person(joints):
    """LSP (14, 3) x, y, visible -> real_person with the 12 body joints in COCO order.
    Joints marked invisible carry no coordinates in this data set, so they stay unlabelled."""
    keypoints = np.zeros((NUM_KEYPOINTS, 3), np.float32)
    for lsp, coco in LSP_TO_COCO.items():
        if joints[lsp, 2] > 0:
            keypoints[coco] = (joints[lsp, 0], joints[lsp, 1], 2)
    pts = joints[joints[:, 2] > 0, :2]   # the head top and the neck help the box too
    (x1, y1), (x2, y2) = pts.min(0), pts.max(0)
    mx, my = LSP_BOX_MARGIN * (x2 - x1), LSP_BOX_MARGIN * (y2 - y1)
    return real_person(keypoints, (x1 - mx, y1 - my, x2 + mx, y2 + my), noisy_labels=True)


def coco_people(annotations):
    """COCO annotations of one image -> real_person list (keypoint-free ones keep their box)."""
    people = []
    for ann in annotations:
        x, y, w, h = ann["bbox"]
        kp = np.asarray(ann.get("keypoints") or np.zeros(3 * NUM_KEYPOINTS), np.float32).reshape(-1, 3)
        people.append(real_person(kp, (x, y, x + w, y + h), ann.get("iscrowd", 0)))
    return people


def list_source(data_root, source):
    """-> (image folder, [(file name relative to it, list of real_person)])."""
    root = Path(data_root) / source
    if source == "lspet":
        files = json.loads((root / "files.json").read_text())
        joints = np.load(root / "joints.npy")
        return root / "images", [(name, [lsp_person(j)]) for name, j in zip(files, joints)]
    if source == "coco_mini_train":
        coco = json.loads((root / "person_keypoints.json").read_text())
        by_image = {}
        for ann in coco["annotations"]:
            by_image.setdefault(ann["image_id"], []).append(ann)
        images = sorted(coco["images"], key=lambda im: im["file_name"])
        return root / "images", [(im["file_name"], coco_people(by_image.get(im["id"], []))) for im in images]
    return root, [(p.name, []) for p in sorted(root.glob("*.jpg"))]


# ----------------------------------------------------------------- labelling
def fit_labels(real_keypoints, candidates, allow_scale):
    """How the labels best match one of the teacher's people (each (17, 3) x, y, score).

    -> (error, scale, mirrored): labels ~ scale x teacher (about the image origin), left and
    right swapped when mirrored; error is the mean distance over the person's size. The
    mirrored reading wins only when it halves the error. None when nothing overlaps enough.
    """
    best = {}
    for mirrored in (False, True):
        labels = real_keypoints[COCO_FLIP_INDEX] if mirrored else real_keypoints
        for teacher in candidates:
            both = (labels[:, 2] > 0) & (teacher[:, 2] >= FIT_MIN_CONFIDENCE)
            if both.sum() < FIT_MIN_JOINTS:
                continue
            t, r = teacher[both, :2].astype(np.float64), labels[both, :2].astype(np.float64)
            scale = float((t * r).sum() / (t * t).sum()) if allow_scale else 1.0
            size = np.linalg.norm(t.max(0) - t.min(0)) + 1e-6
            error = float(np.linalg.norm(scale * t - r, axis=1).mean() / size)
            if mirrored not in best or error < best[mirrored][0]:
                best[mirrored] = (error, scale, mirrored)
    if True in best and (False not in best or best[True][0] < MIRRORED_DISTANCE_RATIO * best[False][0]):
        return best[True]
    return best.get(False)


def align_lsp_labels(person, candidates, frame_hw):
    """An LSPET person's labels put right: mirrored when they swap left and right, scaled into
    the stored image when they are in the original's pixels; None when they cannot be trusted.
    -> (person, what was done: "", "mirrored", "rescaled", "dropped")."""
    maybe_unscaled = max(frame_hw) == LSPET_STORED_MAX_SIDE
    fit = fit_labels(person["keypoints"], candidates, allow_scale=maybe_unscaled)
    if maybe_unscaled and (fit is None or fit[0] > LSPET_FIT_MAX_ERROR):
        return None, "dropped"
    if fit is None:   # the teacher saw too little of this person to judge: trust the labels
        return person, ""
    _, scale, mirrored = fit
    keypoints = person["keypoints"][COCO_FLIP_INDEX] if mirrored else person["keypoints"].copy()
    if abs(scale - 1) <= LSPET_SCALE_TOLERANCE:
        return real_person(keypoints, person["box"], noisy_labels=True), "mirrored" if mirrored else ""
    keypoints[:, :2] /= scale
    return real_person(keypoints, person["box"] / scale, noisy_labels=True), "rescaled"


def merge_labels(teacher_keypoints, real_keypoints):
    """Teacher (17, 3) x, y, score with a person's real labels (17, 3) x, y, v where v > 0.

    -> ((17, 3) x, y, score, (17,) COCO v of the real labels or 0); labelled joints score 1.0.
    """
    merged = np.array(teacher_keypoints, np.float32)
    labelled = real_keypoints[:, 2] > 0
    merged[labelled, :2] = real_keypoints[labelled, :2]
    merged[labelled, 2] = 1.0
    return merged, np.where(labelled, real_keypoints[:, 2], 0)


def label_image(teacher, frame, real, size):
    """-> (people of one image as dicts: keypoints x, y, score; real_v; box; teacher_score;
    iscrowd; fix: what align_lsp_labels did), number of labelled people whose labels were dropped).

    Labelled people are refined by Thunder on their own box; detections of a labelled person
    are dropped; unlabelled real boxes (COCO people without keypoints, crowds) are kept as
    keypoint-free people unless a detection covers them.
    """
    found = teacher(frame, size)
    labelled, unlabelled, dropped = [], [], 0
    for p in real:
        if not p["keypoints"][:, 2].any() or p["iscrowd"]:
            unlabelled.append(p)
            continue
        fix = ""
        if p["noisy_labels"]:
            candidates = list(found.keypoints) + [teacher.thunder(frame, p["box"])]
            p, fix = align_lsp_labels(p, candidates, frame.shape[:2])
        if p is None:
            dropped += 1
        else:
            labelled.append((p, fix))
    keep = np.ones(len(found), bool)
    if labelled and len(found):
        boxes = np.array([p["box"] for p, _ in labelled])
        kps = np.array([p["keypoints"] for p, _ in labelled])
        keep &= pose_similarity(found.boxes, found.keypoints, boxes, kps).max(1) < SAME_PERSON_SIMILARITY
    people = [{"keypoints": found.keypoints[i], "real_v": np.zeros(NUM_KEYPOINTS), "box": found.boxes[i],
               "teacher_score": float(found.scores[i]), "iscrowd": 0, "fix": ""} for i in np.flatnonzero(keep)]
    for p, fix in labelled:
        keypoints, real_v = merge_labels(teacher.thunder(frame, p["box"]), p["keypoints"])
        score = float(keypoints[real_v == 0, 2].mean()) if (real_v == 0).any() else 1.0
        people.append({"keypoints": keypoints, "real_v": real_v, "box": p["box"], "teacher_score": score,
                       "iscrowd": 0, "fix": fix})
    for p in unlabelled:
        covered = len(found) and box_iou(p["box"][None], found.boxes[keep]).max(initial=0) >= SAME_BOX_IOU
        if p["iscrowd"] or not covered:
            people.append({"keypoints": np.zeros((NUM_KEYPOINTS, 3), np.float32),
                           "real_v": np.zeros(NUM_KEYPOINTS), "box": p["box"], "teacher_score": 0.0,
                           "iscrowd": p["iscrowd"], "fix": ""})
    return people, dropped


# ----------------------------------------------------------------- COCO writer
def person_annotation(ann_id, image_id, person, image_hw, min_conf):
    """One COCO annotation: v = the real label's v, else 2 where the teacher is confident and
    the keypoint lies in the image (on close-ups the teacher guesses hips and knees beyond it)."""
    h, w = image_hw
    x1, y1, x2, y2 = np.clip(np.asarray(person["box"], np.float64), 0, [w, h, w, h])
    kp = np.asarray(person["keypoints"], np.float64)
    inside = (kp[:, 0] >= 0) & (kp[:, 0] < w) & (kp[:, 1] >= 0) & (kp[:, 1] < h)
    v = np.where(person["real_v"] > 0, person["real_v"], np.where((kp[:, 2] >= min_conf) & inside, 2, 0))
    v = v.astype(int)
    keypoints = np.stack([np.where(v > 0, kp[:, 0], 0), np.where(v > 0, kp[:, 1], 0), v], axis=1)
    return {
        "id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": int(person["iscrowd"]),
        "bbox": [round(float(x1), 2), round(float(y1), 2), round(float(x2 - x1), 2), round(float(y2 - y1), 2)],
        "area": round(float(SEGMENT_AREA_PER_BOX * (x2 - x1) * (y2 - y1)), 2),
        "num_keypoints": int((v > 0).sum()),
        "keypoints": [round(float(c), 2) if i % 3 < 2 else int(c) for i, c in enumerate(keypoints.reshape(-1))],
        "keypoint_scores": [round(float(s), 4) for s in kp[:, 2]],
        "teacher_score": round(float(person["teacher_score"]), 4),
    }


def coco_document(images, annotations, source):
    return {
        "info": {"description": f"MoveNet teacher pseudo-labels for {source} (tools/pseudo_label.py)"},
        "images": images, "annotations": annotations,
        "categories": [{"id": 1, "name": "person", "supercategory": "person",
                        "keypoints": list(COCO_KEYPOINTS),
                        "skeleton": [[a + 1, b + 1] for a, b in COCO_SKELETON]}],
    }


def label_source(teacher, data_root, source, out_dir, min_conf, limit=None):
    """Label one source and write out_dir/<source>.json; -> statistics dict."""
    image_dir, items = list_source(data_root, source)
    items = items[:limit] if limit else items
    images, annotations, real_keypoints = [], [], 0
    fixes = {"mirrored": 0, "rescaled": 0, "dropped": 0}
    start = time.perf_counter()
    for image_id, (name, real) in enumerate(items, 1):
        frame = cv2.imread(str(image_dir / name), cv2.IMREAD_COLOR)
        if frame is None:
            print(f"skipped unreadable {image_dir / name}", file=sys.stderr)
            continue
        h, w = frame.shape[:2]
        images.append({"id": image_id, "file_name": name, "width": w, "height": h})
        people, dropped = label_image(teacher, frame, real, multipose_size(h, w))
        for person in people:
            annotations.append(person_annotation(len(annotations) + 1, image_id, person, (h, w), min_conf))
            real_keypoints += int(np.count_nonzero(person["real_v"]))
            if person["fix"]:
                fixes[person["fix"]] += 1
        fixes["dropped"] += dropped
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{source}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(coco_document(images, annotations, source)))
    tmp.replace(path)   # a half-written file never looks finished
    with_keypoints = [a for a in annotations if a["num_keypoints"]]
    return {"source": source, "images": len(images), "people": len(with_keypoints),
            "keypoint_free_boxes": len(annotations) - len(with_keypoints),
            "keypoints": sum(a["num_keypoints"] for a in annotations),
            "real_keypoints": real_keypoints, **{f"labels_{k}": n for k, n in fixes.items()},
            "seconds": round(time.perf_counter() - start, 1), "file": str(path)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(REPO_ROOT.parent / "shared" / "data"), help="data root")
    parser.add_argument("--out", default=str(REPO_ROOT / "cache" / "pseudo"))
    parser.add_argument("--sources", nargs="+", choices=SOURCES, default=list(SOURCES))
    parser.add_argument("--min-conf", type=float, default=0.3, help="teacher confidence for v=2")
    parser.add_argument("--min-person", type=float, default=0.2, help="MultiPose person score to keep")
    parser.add_argument("--limit", type=int, default=None, help="first N images per source")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads (the CPU is shared)")
    args = parser.parse_args(argv)
    multipose = MoveNetMultiPose(TEACHER_DIR / "movenet_multipose.onnx", min_score=args.min_person,
                                 threads=args.threads)
    teacher = MoveNetTeacher(multipose, MoveNetThunder(TEACHER_DIR / "movenet_thunder.onnx", threads=args.threads))
    for source in args.sources:
        print(json.dumps(label_source(teacher, args.data, source, Path(args.out), args.min_conf, args.limit)),
              flush=True)


if __name__ == "__main__":
    main()
