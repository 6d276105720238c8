"""tools/pack_training_data.py: shrunk JPEG copies with labels in the packed pixels, loadable by
train_bottomup's dataset through its own --source path rules; the budget drops the lowest-weight
source first."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("torch")
mask_utils = pytest.importorskip("pycocotools.mask")

from pose_core.errors import InputError  # noqa: E402
from pose_core.skeleton import coco_to_openpose  # noqa: E402
from pose_core.train.data import BottomUpDataset  # noqa: E402
from pose_core.train.common import resolve_sources  # noqa: E402
from tools.pack_fidelity import paired_samples  # noqa: E402
from tools.pack_training_data import MIB, on_disk, pack  # noqa: E402


def quiet(*_):
    pass


def smooth_image(width, height, seed):
    rng = np.random.default_rng(seed)
    image = cv2.resize(rng.integers(0, 256, (height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8),
                       (width, height), interpolation=cv2.INTER_CUBIC)
    return cv2.add(image, rng.integers(0, 12, image.shape, dtype=np.uint8))


def person(ann_id, image_id, box, labelled=12):
    """A person whose first `labelled` keypoints lie inside `box` (x, y, w, h); the others 0, 0, 0."""
    x, y, w, h = box
    keypoints = []
    for k in range(17):
        keypoints += [round(x + w * (0.2 + 0.6 * (k % 3) / 2), 2), round(y + h * (0.1 + 0.8 * k / 16), 2), 2] \
            if k < labelled else [0, 0, 0]
    return {"id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0, "bbox": list(box),
            "area": w * h * 0.6, "num_keypoints": labelled, "keypoints": keypoints,
            "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]], "keypoint_scores": [0.9] * 17}


def crowd(ann_id, image_id, box, size):
    x, y, w, h = box
    mask = np.zeros(size, np.uint8)
    mask[y:y + h, x:x + w] = 1
    rle = mask_utils.encode(np.asfortranarray(mask))
    return {"id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 1, "bbox": list(box),
            "area": float(w * h), "num_keypoints": 0, "keypoints": [0] * 51,
            "segmentation": {"size": list(size), "counts": rle["counts"].decode("ascii")}}


@pytest.fixture
def data_root(tmp_path):
    """TEST-ONLY synthetic COCO sets under tmp_path/data: set_a/images (a 640x480 JPEG with a
    person and a crowd box, a 200x160 PNG with a person, a 300x300 JPEG whose only person is too
    small to be a training sample, an unannotated image) and set_b (one 400x300 JPEG person)."""
    root = tmp_path / "data"
    images = [("a0.jpg", 640, 480), ("a1.png", 200, 160), ("a2.jpg", 300, 300), ("a3.jpg", 100, 100)]
    (root / "set_a" / "images").mkdir(parents=True)
    for i, (name, w, h) in enumerate(images):
        cv2.imwrite(str(root / "set_a" / "images" / name), smooth_image(w, h, i))
    anns = [person(1, 1, (100, 80, 200, 300)), crowd(2, 1, (400, 50, 100, 100), (480, 640)),
            person(3, 2, (20, 10, 100, 140)), person(4, 3, (10, 10, 20, 25))]
    coco = {"info": {"description": "synthetic"}, "categories": [{"id": 1, "name": "person"}],
            "images": [{"id": i + 1, "file_name": n, "width": w, "height": h} for i, (n, w, h) in enumerate(images)],
            "annotations": anns}
    (root / "set_a" / "person_keypoints.json").write_text(json.dumps(coco))
    (root / "set_b").mkdir()
    cv2.imwrite(str(root / "set_b" / "b0.jpg"), smooth_image(400, 300, 9))
    coco_b = dict(coco, images=[{"id": 1, "file_name": "b0.jpg", "width": 400, "height": 300}],
                  annotations=[person(1, 1, (150, 20, 120, 260))])
    (root / "labels_b.json").write_text(json.dumps(coco_b))
    return root


SPECS = ["set_a/person_keypoints.json:set_a/images:0.9", "labels_b.json:set_b:0.1"]


def test_images_shrink_and_labels_follow(data_root, tmp_path):
    out = tmp_path / "packed"
    rows = pack(SPECS, data_root, out, max_side=320, quality=90, budget="0", log=quiet)
    assert [r["images"] for r in rows] == [2, 1]   # a2 has no training sample, a3 no annotation
    lines = (out / "sources.txt").read_text().split("\n")
    assert lines == ["--source set_a/person_keypoints.json:set_a/images:0.9",
                     "--source set_b/labels_b.json:set_b/images:0.1", ""]

    packed = json.loads((out / "set_a" / "person_keypoints.json").read_text())
    source = json.loads((data_root / "set_a" / "person_keypoints.json").read_text())
    assert packed["info"] == source["info"] and packed["categories"] == source["categories"]
    records = {im["file_name"]: im for im in packed["images"]}
    assert set(records) == {"a0.jpg", "a1.jpg"}   # the PNG became a JPEG
    assert (records["a0.jpg"]["width"], records["a0.jpg"]["height"]) == (320, 240)
    assert (records["a1.jpg"]["width"], records["a1.jpg"]["height"]) == (200, 160)   # never enlarged
    for name, record in records.items():
        image = cv2.imread(str(out / "set_a" / "images" / name))
        assert image.shape == (record["height"], record["width"], 3)
    original = cv2.imread(str(data_root / "set_a" / "images" / "a0.jpg"))
    shrunk = cv2.resize(original, (320, 240), interpolation=cv2.INTER_AREA)
    assert np.abs(cv2.imread(str(out / "set_a" / "images" / "a0.jpg")).astype(int) - shrunk).mean() < 4

    by_id = {a["id"]: a for a in packed["annotations"]}
    assert set(by_id) == {1, 2, 3}
    a, s = by_id[1], source["annotations"][0]
    kp, kp0 = np.reshape(a["keypoints"], (17, 3)), np.reshape(s["keypoints"], (17, 3))
    expected = np.where(kp0[:, 2:] > 0, np.c_[(kp0[:, :2] + 0.5) * 0.5 - 0.5, kp0[:, 2]], 0)
    np.testing.assert_allclose(kp, expected, atol=0.006)   # pixel centres at integers, 0.01 px rounding
    np.testing.assert_allclose(a["bbox"], np.multiply(s["bbox"], 0.5), atol=0.006)
    assert a["area"] == pytest.approx(s["area"] * 0.25, abs=0.01)
    np.testing.assert_allclose(a["segmentation"][0], np.multiply(s["segmentation"][0], 0.5), atol=0.006)
    assert a["keypoint_scores"] == s["keypoint_scores"] and a["num_keypoints"] == s["num_keypoints"]
    rle = by_id[2]["segmentation"]
    assert rle["size"] == [240, 320] and by_id[2]["bbox"] == [200, 25, 50, 50]
    assert abs(int(mask_utils.decode(rle).sum()) - 2500) <= 100
    assert by_id[3]["keypoints"] == source["annotations"][2]["keypoints"]   # a1: scale 1

    # train_bottomup's path rules and dataset read the packed folder as its --data-root
    dataset = BottomUpDataset(resolve_sources([line.split(" ", 1)[1] for line in lines if line], out))
    assert len(dataset) == 3
    item = dataset[0]   # a0's person (record order: image id), tall enough not to be shrunk again
    assert item["image"].shape == (240, 320, 3)
    np.testing.assert_allclose(item["keypoints"][0], coco_to_openpose(kp.astype(np.float32)), atol=1e-5)
    assert item["ignore_boxes"].tolist() == [[200, 25, 250, 75]]


def test_all_annotated_and_no_shrinking(data_root, tmp_path):
    rows = pack(SPECS[:1], data_root, tmp_path / "packed", max_side=0, budget="0", all_annotated=True, log=quiet)
    assert rows[0]["images"] == 3   # a2 too; a3 has no annotation
    packed = json.loads((tmp_path / "packed" / "set_a" / "person_keypoints.json").read_text())
    source = json.loads((data_root / "set_a" / "person_keypoints.json").read_text())
    assert {(im["width"], im["height"]) for im in packed["images"]} == {(640, 480), (200, 160), (300, 300)}
    assert [a["keypoints"] for a in packed["annotations"]] == [a["keypoints"] for a in source["annotations"]]
    # an unshrunk JPEG keeps its original bytes when they are smaller than a re-encoding
    a0 = (tmp_path / "packed" / "set_a" / "images" / "a0.jpg").read_bytes()
    assert len(a0) <= len((data_root / "set_a" / "images" / "a0.jpg").read_bytes())


def test_keep_samples_stops_shrinking_at_the_minimum_main_person_area(data_root, tmp_path):
    # at max side 64, a0's person (120 x 180 px of box at scale 0.1) would be too small to be sampled
    rows = pack(SPECS[:1], data_root, tmp_path / "a", max_side=64, budget="0", log=quiet)
    assert rows[0]["samples"] < rows[0]["samples_before"]
    rows = pack(SPECS[:1], data_root, tmp_path / "b", max_side=64, budget="0", keep_samples=True, log=quiet)
    assert rows[0]["samples"] == rows[0]["samples_before"] == 2
    packed = json.loads((tmp_path / "b" / "set_a" / "person_keypoints.json").read_text())
    assert all(a["area"] >= 32 * 32 for a in packed["annotations"] if a["iscrowd"] == 0)
    assert max(im["width"] for im in packed["images"]) < 640   # still shrunk


def test_budget_drops_the_lowest_weight_source_first(data_root, tmp_path):
    rows = pack(SPECS, data_root, tmp_path / "full", max_side=320, budget="0", log=quiet)
    full = sum(on_disk(f.stat().st_size) for f in (tmp_path / "full").rglob("*") if f.is_file())
    budget = full - rows[1]["image_mib"] * MIB / 2   # no room for set_b's image
    out = tmp_path / "packed"
    rows = pack(SPECS, data_root, out, max_side=320, budget=str(budget / MIB), log=quiet)
    assert [(r["images"], r["dropped"]) for r in rows] == [(2, 0), (0, 1)]
    assert sum(on_disk(f.stat().st_size) for f in out.rglob("*") if f.is_file()) <= budget
    assert (out / "sources.txt").read_text() == "--source set_a/person_keypoints.json:set_a/images:0.9\n"
    assert not list((out / "set_b" / "images").iterdir())


def test_replaces_only_a_previous_pack(data_root, tmp_path):
    out = tmp_path / "packed"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not a previous pack"):
        pack(SPECS[:1], data_root, out, budget="0", check_samples=0, log=quiet)
    assert (out / "notes.txt").read_text() == "mine" and not Path(str(out) + ".tmp").exists()
    (out / "notes.txt").unlink()
    pack(SPECS[:1], data_root, out, budget="0", check_samples=0, log=quiet)
    pack(SPECS[:1], data_root, out, budget="0", check_samples=0, log=quiet)   # over its own pack
    assert (out / "pack.json").is_file()


def test_webp_pack_is_read_by_the_training_dataset(data_root, tmp_path):
    out = tmp_path / "packed"
    pack(SPECS[:1], data_root, out, max_side=320, quality=90, budget="0", log=quiet, image_format="webp")
    packed = json.loads((out / "set_a" / "person_keypoints.json").read_text())
    assert {im["file_name"] for im in packed["images"]} == {"a0.webp", "a1.webp"}   # the JPEG a0 too
    assert (out / "set_a" / "images" / "a0.webp").read_bytes()[8:12] == b"WEBP"
    assert json.loads((out / "pack.json").read_text())["settings"]["format"] == "webp"
    original = cv2.imread(str(data_root / "set_a" / "images" / "a0.jpg"))
    shrunk = cv2.resize(original, (320, 240), interpolation=cv2.INTER_AREA)
    assert np.abs(cv2.imread(str(out / "set_a" / "images" / "a0.webp")).astype(int) - shrunk).mean() < 4
    dataset = BottomUpDataset(resolve_sources(["set_a/person_keypoints.json:set_a/images:1"], out))
    assert dataset[0]["image"].shape == (240, 320, 3)


def test_training_crop_packs_at_the_resolution_training_loads(data_root, tmp_path):
    # a0's person is 300 px tall: at crop 256 data.py shrinks a0 to x0.563 on loading; a1's 140 px
    # person needs no shrinking. Training then reads the same pixels from the pack as from the source.
    out = tmp_path / "packed"
    pack(SPECS[:1], data_root, out, quality=95, budget="0", log=quiet, image_format="webp", training_crop=256)
    packed = json.loads((out / "set_a" / "person_keypoints.json").read_text())
    assert {im["file_name"]: (im["width"], im["height"]) for im in packed["images"]} == {
        "a0.webp": (361, 271), "a1.webp": (200, 160)}
    assert json.loads((out / "pack.json").read_text())["settings"]["training_crop"] == 256
    spec = ["set_a/person_keypoints.json:set_a/images:1"]
    from_source, from_pack = (BottomUpDataset(resolve_sources(spec, root), crop=256) for root in (data_root, out))
    for i in range(len(from_source)):
        a, b = from_source[i], from_pack[i]
        assert a["image"].shape == b["image"].shape
        assert np.abs(a["image"].astype(int) - b["image"]).mean() < 3
        assert np.abs(a["keypoints"][..., :2] - b["keypoints"][..., :2]).max() < 0.5


def test_hold_out_leaves_out_the_images_eval_limit_scores(data_root, tmp_path):
    out = tmp_path / "packed"
    rows = pack(SPECS, data_root, out, budget="0", log=quiet, hold_out="set_a/person_keypoints.json:1")
    packed = json.loads((out / "set_a" / "person_keypoints.json").read_text())
    assert [im["file_name"] for im in packed["images"]] == ["a1.jpg"]   # a0 has the lowest id
    assert not (out / "set_a" / "images" / "a0.jpg").exists()
    assert [r["held_out"] for r in rows] == [1, 0]
    assert json.loads((out / "pack.json").read_text())["settings"]["hold_out"] == "set_a/person_keypoints.json:1"
    with pytest.raises(InputError, match="0 sources"):
        pack(SPECS, data_root, tmp_path / "other", budget="0", log=quiet, hold_out="nothing.json:1")


def test_pack_fidelity_pairs_the_same_people(data_root, tmp_path):
    out = tmp_path / "packed"
    pack(SPECS[:1], data_root, out, max_side=128, budget="0", keep_samples=True, log=quiet)
    spec = ["set_a/person_keypoints.json:set_a/images:1"]
    source, packed = (BottomUpDataset(resolve_sources(spec, root)) for root in (data_root, out))
    pairs = paired_samples(source, packed)
    assert len(pairs) == 2
    for i, j in pairs:
        assert source.records[source.items[i][0]].path.stem == packed.records[packed.items[j][0]].path.stem
        scale = packed[j]["image"].shape[1] / source[i]["image"].shape[1]   # a0 shrunk, a1 not
        np.testing.assert_allclose(packed[j]["height"], source[i]["height"] * scale, rtol=0.02)
