"""Pack training data small enough to travel with the repository to a rented GPU machine.

    nice -n 19 .venv/bin/python tools/pack_training_data.py \
        --source coco_person_train/person_keypoints.json:coco_person_train/images:0.97 \
        --source coco_mini_train/person_keypoints.json:coco_mini_train/images:0.03 \
        [--max-side 320 | --training-crop 256] [--quality 85] [--format jpeg|webp]
        [--keep-samples] [--hold-out ANN_JSON:N] [--budget-mb auto] [--out cache/packed]
    python -m pose_core.train.train_bottomup --data-root cache/packed $(cat cache/packed/sources.txt) ...

Takes the --source ANN_JSON:IMAGE_DIR:WEIGHT specs and --data-root of
`python -m pose_core.train.train_bottomup` (the same parser and path lookup: its
resolve_sources; no --source: its default sources) and writes into --out:
- <name>/images/...: a JPEG (--format webp: WebP) copy of every image that training would
  sample (it has a main person, pose_core/train/data.py's rule, judged on the packed labels;
  --all-annotated: every image with at least one annotation), shrunk (INTER_AREA) to at most
  --max-side pixels on its longer side, never enlarged. In a JPEG pack, an image that needs
  no shrinking keeps its original bytes when those are smaller than the re-encoded JPEG.
  data.py's main-person rule (>= 32x32 area) then sees packed pixels, so shrinking loses the
  smallest main persons as training samples (the summary counts them); --keep-samples
  shrinks an image at most until its smallest main person is 32x32, which keeps them all.
  --training-crop CROP shrinks an image instead only as far as training at that crop side
  shrinks it on loading (data.py), so crops come from the same resolution as from the source:
  a 256 px pack blurs them (stop 17, tools/pack_fidelity.py: 0.014 AP lost against the source
  in 120 steps on the same crops; 0.006 at --training-crop 256, WebP 90).
  <name> comes from the image folder (coco_person_train/images -> coco_person_train,
  har15 -> har15); sources that share an image folder share the packed images;
- <name>/<annotation file name>: the annotation file with only the packed images, keypoints
  (pixel centres at integers, as data.py shrinks: x' = (x + 0.5) f - 0.5), boxes, areas and
  segmentations (polygons scaled, RLE masks resized) in the packed pixels; other fields kept;
- sources.txt: the `--source REL_ANN:REL_IMAGES:WEIGHT` arguments, relative to --out, for
  `train_bottomup --data-root <out>`; pack.json: the settings and the per-source table.

--hold-out ANN_JSON:N leaves out the first N annotated images (by id) of that source, the
ones `pose_core.eval --ann ANN_JSON --limit N` scores, so that weights trained on the pack
can be chosen on images they never saw.

--budget-mb caps the packed folder; `auto` (the default) is what the device machine's 64 MiB
working-tree limit leaves: 64 MiB minus the files that travel anyway (tracked and
untracked-not-ignored files, shared/) minus a 1 MiB margin, every file counted in whole 4 KiB
disk blocks as the device tool counts it (51 MiB of JPEG bytes took 60 MiB there and were
refused). Over the budget, images are
dropped from the lowest-weight source first (in a fixed pseudo-random order, so what is kept
is an unbiased subset), then from the next one, and the summary says so. A source's weight
(its share of the sample stream) does not change with its size.

--out must be ignored by git (cache/ is): the device tool's `carry` takes ignored paths only.
The packed folder is written next to --out and swapped in when complete; an existing --out
is replaced only when it is a previous pack (it has pack.json).
"""
import argparse
import copy
import json
import math
import os
import shutil
import subprocess
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
from pose_core.errors import InputError, PoseError  # noqa: E402
from pose_core.train.common import DEFAULT_DATA_ROOT, DEFAULT_SOURCES, resolve_sources  # noqa: E402
from pose_core.train.data import MIN_MAIN_AREA, BottomUpDataset, _image_record, coco_images, load_shrink  # noqa: E402

MIB = 1 << 20
DEVICE_TREE_LIMIT_MIB = 64
BUDGET_MARGIN_MIB = 1
JPEG_SUFFIXES = (".jpg", ".jpeg")
# WebP at quality 75 takes ~35% fewer bytes than JPEG at 82 with as high a PSNR (80 COCO
# images at 256 px), so more images fit the device tool's 64 MiB: a GPU overfits a small pack.
# format -> (suffix, quality flag, further encoder parameters)
FORMATS = {"jpeg": (".jpg", cv2.IMWRITE_JPEG_QUALITY, [cv2.IMWRITE_JPEG_OPTIMIZE, 1]),
           "webp": (".webp", cv2.IMWRITE_WEBP_QUALITY, [])}
DECIMALS = 2  # coordinates in the rewritten files: 0.01 px


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", action="append",
                   help="ANN_JSON:IMAGE_DIR:WEIGHT as train_bottomup takes it, repeatable "
                        "(default: train_bottomup's default sources)")
    p.add_argument("--data-root", default=str(DEFAULT_DATA_ROOT),
                   help="where relative --source paths are looked up first (default: train_bottomup's)")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "cache" / "packed")
    p.add_argument("--max-side", type=int, default=320, help="longer image side in pixels; 0: keep the size")
    p.add_argument("--training-crop", type=int, default=0, metavar="CROP",
                   help="instead of --max-side: shrink an image only as far as train_bottomup at crop "
                        "side CROP shrinks it on loading for its least-shrunk main person, so every "
                        "crop is taken at the resolution training takes it from the source")
    p.add_argument("--quality", type=int, default=85, help="JPEG or WebP quality of re-encoded images")
    p.add_argument("--format", choices=sorted(FORMATS), default="jpeg", help="image format of the pack")
    p.add_argument("--budget-mb", default="auto",
                   help="MiB the packed folder may take: a number, 'auto' (64 MiB minus what travels "
                        "anyway, minus 1 MiB) or 0 (no limit)")
    p.add_argument("--keep-samples", action="store_true",
                   help="shrink an image at most until its smallest main person is 32x32 (data.py's "
                        "minimum area), so training samples the same persons as from the source")
    p.add_argument("--hold-out", metavar="ANN_JSON:N",
                   help="leave out the first N annotated images (by id) of the source with this "
                        "annotation file: the images `pose_core.eval --ann <it> --limit N` scores, so "
                        "weights trained on the pack can be chosen on images they never saw")
    p.add_argument("--all-annotated", action="store_true",
                   help="also pack annotated images without a main person (training never samples them)")
    p.add_argument("--check-samples", type=int, default=2,
                   help="load this many samples of each packed source with train_bottomup's dataset")
    return p.parse_args(argv)


# ---------------------------------------------------------------- geometry
def _r(value):
    return round(float(value), DECIMALS)


def scale_annotation(ann, fx, fy, new_size):
    """A copy of a COCO annotation in an image resized by (fx, fy) to new_size = (w, h)."""
    ann = copy.deepcopy(ann)
    if "keypoints" in ann:
        kp = np.asarray(ann["keypoints"], np.float64).reshape(-1, 3)
        out = []
        for x, y, v in kp:
            if x == 0 and y == 0 and v == 0:   # COCO's "not labelled"
                out += [0, 0, 0]
            else:
                out += [_r((x + 0.5) * fx - 0.5), _r((y + 0.5) * fy - 0.5), int(v) if float(v).is_integer() else v]
        ann["keypoints"] = out
    if "bbox" in ann:
        x, y, w, h = ann["bbox"]
        ann["bbox"] = [_r(x * fx), _r(y * fy), _r(w * fx), _r(h * fy)]
    if "area" in ann:
        ann["area"] = _r(ann["area"] * fx * fy)
    seg = ann.get("segmentation")
    if isinstance(seg, list):
        ann["segmentation"] = [[_r(c * (fx if i % 2 == 0 else fy)) for i, c in enumerate(poly)] for poly in seg]
    elif isinstance(seg, dict):
        ann["segmentation"] = _resize_rle(seg, new_size)
    return ann


def _resize_rle(rle, new_size):
    """An RLE mask (compressed or not) resized (nearest) to new_size = (w, h), compressed."""
    from pycocotools import mask as mask_utils

    h, w = rle["size"]
    if isinstance(rle["counts"], list):
        rle = mask_utils.frPyObjects(rle, h, w)
    mask = mask_utils.decode(rle)
    mask = cv2.resize(mask, new_size, interpolation=cv2.INTER_NEAREST)
    out = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in out["size"]], "counts": out["counts"].decode("ascii")}


def packed_size(width, height, max_side):
    """(w, h) of an image of width x height shrunk to at most max_side (never enlarged)."""
    if not max_side or max(width, height) <= max_side:
        return width, height
    s = max_side / max(width, height)
    return max(1, round(width * s)), max(1, round(height * s))


# ---------------------------------------------------------------- budget
def on_disk(size):
    """Bytes a file of `size` bytes takes on disk (4 KiB blocks): the device tool's size limit
    counts these, and a pack of thousands of small JPEGs takes about 17% more than their bytes."""
    return -(-size // 4096) * 4096


def travelling_mib(repo_root=REPO_ROOT):
    """MiB of what the device tool sends anyway: tracked and untracked-not-ignored files, shared/."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=repo_root, capture_output=True, check=True).stdout.split(b"\0")
    total = sum(on_disk((repo_root / os.fsdecode(f)).stat().st_size) for f in listed
                if f and (repo_root / os.fsdecode(f)).is_file())
    shared = repo_root / "shared"
    if shared.is_dir():
        total += sum(on_disk(p.stat().st_size) for p in shared.rglob("*") if p.is_file() and not p.is_symlink())
    return total / MIB


def resolve_budget(value):
    """(budget in bytes or None for no limit, a line that says where it came from)."""
    if str(value).lower() == "auto":
        tree = travelling_mib()
        mib = DEVICE_TREE_LIMIT_MIB - tree - BUDGET_MARGIN_MIB
        if mib <= 0:
            raise InputError(f"no room: the working tree already takes {tree:.1f} of the device's "
                             f"{DEVICE_TREE_LIMIT_MIB} MiB")
        return int(mib * MIB), (f"budget auto: {DEVICE_TREE_LIMIT_MIB} MiB - working tree {tree:.1f} MiB "
                                f"- {BUDGET_MARGIN_MIB} MiB margin = {mib:.1f} MiB")
    try:
        mib = float(value)
    except ValueError:
        raise InputError(f"--budget-mb {value!r}: expected a number or 'auto'") from None
    return (int(mib * MIB), f"budget {mib:g} MiB") if mib > 0 else (None, "no budget")


def _json_bytes(obj):
    return len(json.dumps(obj, separators=(",", ":")).encode()) + 1  # + the list comma


# ---------------------------------------------------------------- packing
class PackedSource:
    def __init__(self, spec, source, folder, ann_name):
        self.spec, self.source, self.folder, self.ann_name = spec, source, folder, ann_name
        with open(source.ann_file) as f:
            self.coco = json.load(f)
        self.images = {}       # file_name -> (packed image record, [packed annotations]) of kept images
        self.mains = {}        # file_name -> main persons (training samples) in the packed labels
        self.annotated = 0
        self.samples_before = 0  # main persons in the source's own labels
        self.dropped = 0       # by the budget
        self.held_out = 0      # --hold-out images

    @property
    def weight(self):
        return self.source.weight

    def rel_spec(self):
        return f"{self.folder}/{self.ann_name}:{self.folder}/images:{self.source.weight:g}"

    def entry_bytes(self, file_name):
        record, anns = self.images[file_name]
        return _json_bytes(record) + sum(_json_bytes(a) for a in anns)

    def write(self, out_dir):
        coco = {k: v for k, v in self.coco.items() if k not in ("images", "annotations")}
        records = [self.images[f] for f in sorted(self.images, key=lambda f: self.images[f][0]["id"])]
        coco["images"] = [r for r, _ in records]
        coco["annotations"] = [a for _, anns in records for a in anns]
        path = out_dir / self.folder / self.ann_name
        path.write_text(json.dumps(coco, separators=(",", ":")))
        return path.stat().st_size


def _folder_name(image_dir, taken):
    path = Path(image_dir).resolve()
    name = path.parent.name if path.name == "images" else path.name
    base, k = name or "source", 2
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    return name


def _packed_file_name(file_name, image_format="jpeg"):
    p, suffix = Path(file_name), FORMATS[image_format][0]
    return str(p if image_format == "jpeg" and p.suffix.lower() in JPEG_SUFFIXES else p.with_suffix(suffix))


def pack(specs, data_root, out, max_side=320, quality=85, budget="auto", all_annotated=False,
         check_samples=2, keep_samples=False, log=print, image_format="jpeg", training_crop=0, hold_out=None):
    """Write the packed folder (see the module docstring); returns the summary rows."""
    start = time.perf_counter()
    sources = resolve_sources(specs, data_root)
    budget_bytes, budget_line = resolve_budget(budget)
    out = Path(out)
    _check_ignored(out, log)

    # One packed folder per distinct image folder, one annotation file per source.
    folders, packed = {}, []
    for spec, source in zip(specs, sources):
        key = Path(source.image_dir).resolve()
        if key not in folders:
            folders[key] = _folder_name(key, set(folders.values()))
        folder = folders[key]
        taken = {p.ann_name for p in packed if p.folder == folder}
        ann_name, k = Path(source.ann_file).name, 2
        while ann_name in taken:
            ann_name, k = f"{Path(source.ann_file).stem}_{k}.json", k + 1
        packed.append(PackedSource(spec, source, folder, ann_name))

    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    for folder in set(folders.values()):
        (tmp / folder / "images").mkdir(parents=True)

    # Which sources use each image (sources sharing an image folder share the file).
    users = {}   # (folder, file_name) -> [(PackedSource, image record, annotations)]
    held = _held_out_images(hold_out, packed)
    for p in packed:
        for image, anns in coco_images(p.source.ann_file):
            if anns and (p.folder, image["file_name"]) in held:   # for every source that uses it
                p.held_out += 1
            elif anns:
                p.annotated += 1
                p.samples_before += len(_image_record(None, anns).mains)
                users.setdefault((p.folder, image["file_name"]), []).append((p, image, anns))

    image_bytes = {}   # (folder, packed file name) -> bytes on disk
    image_dir_of = {p.folder: Path(p.source.image_dir) for p in packed}
    for n, ((folder, file_name), uses) in enumerate(users.items(), 1):
        src = image_dir_of[folder] / file_name
        image = cv2.imread(str(src), cv2.IMREAD_COLOR)   # as data.py reads it (EXIF orientation applied)
        if image is None:
            raise InputError(f"cannot read training image {src}")
        h, w = image.shape[:2]
        new_w, new_h = training_size(w, h, uses, training_crop) if training_crop else packed_size(w, h, max_side)
        if keep_samples and (new_w, new_h) != (w, h):
            new_w, new_h = _keep_samples_size(w, h, new_w, uses)
        kept = _scaled_uses(uses, w, h, new_w, new_h, src)
        if keep_samples and (new_w, new_h) != (w, h) and any(
                m != len(_image_record(src, anns).mains) for (_, _, anns), (_, _, _, m) in zip(uses, kept)):
            new_w, new_h = w, h   # a rounding edge: keep the size
            kept = _scaled_uses(uses, w, h, w, h, src)
        out_name = _packed_file_name(file_name, image_format)
        kept = [(p, dict(record, file_name=out_name, width=new_w, height=new_h), scaled, mains)
                for p, record, scaled, mains in kept if all_annotated or mains]
        if not kept:
            continue
        data = _encode(image, (new_w, new_h), quality, image_format)
        if (image_format == "jpeg" and (new_w, new_h) == (w, h) and src.suffix.lower() in JPEG_SUFFIXES
                and src.stat().st_size <= len(data)):
            data = src.read_bytes()                     # no shrinking: the original is smaller
        dest = tmp / folder / "images" / out_name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        image_bytes[(folder, out_name)] = len(data)
        for p, record, scaled, mains in kept:
            p.images[out_name] = (record, scaled)
            p.mains[out_name] = mains
        if n % 1000 == 0:
            log(f"  {n}/{len(users)} images ({time.perf_counter() - start:.0f} s)")

    dropped_line = _apply_budget(packed, image_bytes, budget_bytes, tmp)
    rows = []
    for p in packed:
        json_bytes = p.write(tmp)
        rows.append(dict(source=p.spec, label=f"{p.folder}/{p.ann_name}", packed=p.rel_spec(), weight=p.weight, annotated=p.annotated,
                         images=len(p.images), dropped=p.dropped, held_out=p.held_out, samples_before=p.samples_before,
                         samples=sum(p.mains[f] for f in p.images), json_mib=json_bytes / MIB,
                         image_mib=sum(image_bytes[(p.folder, f)] for f in p.images) / MIB))
    for (folder, name), size in list(image_bytes.items()):   # images every user dropped
        if not any(name in p.images for p in packed if p.folder == folder):
            (tmp / folder / "images" / name).unlink()
            del image_bytes[(folder, name)]
    kept_sources = [p for p in packed if p.images]   # a source the budget emptied is left out
    (tmp / "sources.txt").write_text("".join(f"--source {p.rel_spec()}\n" for p in kept_sources))
    total = sum(f.stat().st_size for f in tmp.rglob("*") if f.is_file())
    settings = dict(max_side=None if training_crop else max_side, training_crop=training_crop or None,
                    hold_out=hold_out, quality=quality, format=image_format, budget=budget_line,
                    all_annotated=all_annotated, keep_samples=keep_samples,
                    data_root=str(data_root), total_mib=round(total / MIB, 2))
    (tmp / "pack.json").write_text(json.dumps(dict(settings=settings, sources=rows), indent=1))
    _swap_in(tmp, out)

    _print_table(rows, total, budget_line, dropped_line, log)
    log(f"packed into {out} in {time.perf_counter() - start:.0f} s; train with:\n"
        f"  python -m pose_core.train.train_bottomup --data-root {out} $(cat {out}/sources.txt) ...")
    if check_samples:
        check_packed(out, [p.rel_spec() for p in kept_sources], check_samples, log)
    return rows


def _scaled_uses(uses, w, h, new_w, new_h, src):
    """[(source, image record, scaled annotations, main persons in them)] for each use of an image."""
    out = []
    for p, record, anns in uses:
        scaled = [scale_annotation(a, new_w / w, new_h / h, (new_w, new_h)) for a in anns]
        out.append((p, record, scaled, len(_image_record(src, scaled).mains)))  # area rule: packed pixels
    return out


def training_size(w, h, uses, crop):
    """The packed size at which every main person of the image is at least as large as
    data.py leaves it on loading for a crop of side `crop` (its load_shrink); never enlarged."""
    heights = [height for _, _, anns in uses for _, _, height in _image_record(None, anns).mains]
    scale = max((load_shrink(height, crop) for height in heights), default=1.0)
    if scale >= 1.0:
        return w, h
    return min(w, math.ceil(w * scale)), min(h, math.ceil(h * scale))


def _keep_samples_size(w, h, new_w, uses):
    """The packed size that keeps every main person's area >= MIN_MAIN_AREA (1% margin)."""
    scale = new_w / w
    for _, _, anns in uses:
        for ann in anns:
            if _image_record(None, [ann]).mains:   # a main person on its own
                x, y, bw, bh = ann.get("bbox", (0, 0, 0, 0))
                scale = max(scale, 1.01 * math.sqrt(MIN_MAIN_AREA / max(ann.get("area", bw * bh), 1e-6)))
    if scale >= 1.0:
        return w, h
    return max(1, round(w * scale)), max(1, round(h * scale))


def _encode(image, size, quality, image_format="jpeg"):
    if size != (image.shape[1], image.shape[0]):
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    suffix, quality_flag, extra = FORMATS[image_format]
    ok, data = cv2.imencode(suffix, image, [quality_flag, int(quality), *extra])
    if not ok:
        raise PoseError(f"{image_format} encoding failed")
    return data.tobytes()


def _apply_budget(packed, image_bytes, budget_bytes, tmp):
    """Drop images, lowest-weight source first, until the estimated folder size fits."""
    if budget_bytes is None:
        return ""
    refs = {}
    for p in packed:
        for name in p.images:
            refs[(p.folder, name)] = refs.get((p.folder, name), 0) + 1
    # sources.txt, pack.json and each annotation file: at most a disk block more than their bytes
    fixed = 4096 * (2 + len(packed)) + sum(_json_bytes({k: v for k, v in p.coco.items() if k not in ("images", "annotations")})
                       for p in packed)
    total = fixed + sum(map(on_disk, image_bytes.values())) + sum(p.entry_bytes(f) for p in packed for f in p.images)
    if total <= budget_bytes:
        return ""
    # Stable order: by weight, and among equal weights the later source first.
    for p in sorted(packed, key=lambda p: (p.weight, -packed.index(p))):
        # images no other source uses first (dropping a shared one frees only its labels)
        for name in sorted(p.images, key=lambda f: (refs[(p.folder, f)] > 1, zlib.crc32(f.encode()))):
            if total <= budget_bytes:
                break
            total -= p.entry_bytes(name)
            del p.images[name]
            p.dropped += 1
            refs[(p.folder, name)] -= 1
            if refs[(p.folder, name)] == 0:
                total -= on_disk(image_bytes[(p.folder, name)])
    lines = [f"{p.spec}: dropped {p.dropped} of {p.dropped + len(p.images)} images"
             + ("" if p.images else " (left out of sources.txt)") for p in packed if p.dropped]
    return ("over budget, dropped images from the lowest-weight sources first:\n  " + "\n  ".join(lines)
            if lines else "")


def _held_out_images(hold_out, packed):
    """'ANN_JSON:N' -> {(folder, file name)} of the first N annotated images, by id, of the
    source whose annotation file ends with ANN_JSON (pose_core.eval's --limit N images)."""
    if not hold_out:
        return set()
    ann, _, count = hold_out.rpartition(":")
    if not count.isdigit():
        raise InputError(f"--hold-out '{hold_out}': expected ANN_JSON:N")
    matches = [p for p in packed if Path(p.source.ann_file).as_posix().endswith(ann)]
    if len(matches) != 1:
        raise InputError(f"--hold-out '{hold_out}': {len(matches)} sources have that annotation file, not one")
    annotated = [image["file_name"] for image, anns in coco_images(matches[0].source.ann_file) if anns]
    return {(matches[0].folder, name) for name in annotated[:int(count)]}


def _swap_in(tmp, out):
    if out.exists():
        if not (out / "pack.json").is_file() and any(out.iterdir()):
            shutil.rmtree(tmp)
            raise InputError(f"{out} exists and is not a previous pack (no pack.json): not replacing it")
        shutil.rmtree(out)
    tmp.rename(out)


def _check_ignored(out, log):
    out = Path(out).resolve()
    try:
        out.relative_to(REPO_ROOT)
    except ValueError:
        return   # outside the repository: cannot travel, but it is the caller's choice
    r = subprocess.run(["git", "check-ignore", "-q", str(out / "x")], cwd=REPO_ROOT)
    if r.returncode == 1:
        raise InputError(f"{out} is not ignored by git: the device tool carries ignored paths only "
                         "(use a folder under cache/)")


def _print_table(rows, total, budget_line, dropped_line, log):
    log(f"{'packed source':<58} {'weight':>6} {'annotated':>9} {'images':>6} {'dropped':>7} {'samples':>13} "
        f"{'img MiB':>7} {'json MiB':>8}")
    for r in rows:
        samples = f"{r['samples_before']}->{r['samples']}"
        log(f"{r['label'][-58:]:<58} {r['weight']:>6g} {r['annotated']:>9} {r['images']:>6} {r['dropped']:>7} "
            f"{samples:>13} {r['image_mib']:>7.2f} {r['json_mib']:>8.2f}")
    log(f"{'total MiB (the folder; shared images counted once)':<58} {'':>6} {'':>9} "
        f"{sum(r['images'] for r in rows):>6} {sum(r['dropped'] for r in rows):>7} {'':>13} {total / MIB:>16.2f}")
    log("samples: main persons (what training samples) in the source's labels -> in the packed labels "
        "(the 32x32 minimum area applies to packed pixels)")
    log(budget_line)
    if dropped_line:
        log(dropped_line)


def check_packed(out, rel_specs, samples, log=print):
    """Load the packed sources with train_bottomup's path rules and dataset, read a few samples."""
    dataset = BottomUpDataset(resolve_sources(rel_specs, out))
    for index, spec in enumerate(rel_specs):
        items = np.flatnonzero(dataset.source_of_item == index)
        for i in items[:samples]:
            item = dataset[int(i)]
            assert item["image"].ndim == 3 and item["keypoints"].shape[1:] == (18, 3)
        log(f"check: {spec}: {len(items)} samples, read {min(samples, len(items))} "
            f"(e.g. image {dataset[int(items[0])]['image'].shape if len(items) else None})")
    return dataset


def main(argv=None):
    args = parse_args(argv)
    try:
        pack(args.source or list(DEFAULT_SOURCES), args.data_root, args.out, args.max_side, args.quality,
             args.budget_mb, args.all_annotated, args.check_samples, args.keep_samples, image_format=args.format,
             training_crop=args.training_crop, hold_out=args.hold_out)
    except PoseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
