"""Top-down training: crops as inference crops them, keypoints and targets where the image
content is, the left/right swap of flipped crops, and the resumable training script, on
small synthetic COCO files written here (no data or cache needed)."""
import csv
import json

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pose_core.skeleton import NUM_KEYPOINTS  # noqa: E402
from pose_core.topdown import TopDownPipeline, apply_affine, crop_affine, decode_heatmaps  # noqa: E402
from pose_core.train import train_topdown  # noqa: E402
from pose_core.train.data import Source  # noqa: E402
from pose_core.train.topdown_data import TopDownDataset  # noqa: E402
from pose_core.train.topdown_targets import render_topdown_targets  # noqa: E402
from conftest import write_coco_json  # noqa: E402

NOSE, L_SHO, R_SHO = 0, 5, 6
# Dot colours (BGR as written) and the RGB channel of the crop that shows them.
DOTS = {NOSE: ((0, 0, 255), 0), L_SHO: ((0, 255, 0), 1), R_SHO: ((255, 0, 0), 2)}
LAYOUT = [(20, 0), (22, -2), (18, -2), (25, 0), (15, 0), (30, 15), (10, 15), (33, 35), (7, 35),
          (34, 55), (6, 55), (27, 60), (13, 60), (27, 85), (13, 85), (27, 110), (13, 110)]


def person(image_id, ann_id, x0, y0, scale=1.0):
    """A standing person facing the camera (its left side on the image's right)."""
    kp = np.zeros((NUM_KEYPOINTS, 3))
    for j, (dx, dy) in enumerate(LAYOUT):
        kp[j] = (x0 + dx * scale, y0 + dy * scale, 2)
    return {"id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0, "num_keypoints": 17,
            "keypoints": kp.ravel().tolist(), "bbox": [x0 + 5 * scale, y0 - 3 * scale, 32 * scale, 115 * scale],
            "area": 3000.0 * scale * scale}


def write_coco(folder, people, size=(150, 110)):
    """images/<id>.png (dark, a coloured 5x5 dot at each person's nose and shoulders) and ann.json."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for image_id, boxes in people.items():
        image = np.full((size[0], size[1], 3), 30, np.uint8)
        for x0, y0, scale in boxes:
            ann = person(image_id, len(annotations) + 1, x0, y0, scale)
            kp = np.asarray(ann["keypoints"]).reshape(-1, 3)
            for k, (colour, _) in DOTS.items():
                x, y = int(round(kp[k, 0])), int(round(kp[k, 1]))
                image[y - 2:y + 3, x - 2:x + 3] = colour
            annotations.append(ann)
        cv2.imwrite(str(folder / "images" / f"{image_id}.png"), image)
        images.append({"id": image_id, "file_name": f"{image_id}.png", "height": size[0], "width": size[1]})
    # a crowd box and a person without keypoints: not samples
    annotations.append({"id": 90, "image_id": 1, "category_id": 1, "iscrowd": 1, "num_keypoints": 0,
                        "bbox": [0, 0, 10, 10], "area": 100.0, "keypoints": [0] * 51})
    annotations.append({"id": 91, "image_id": 1, "category_id": 1, "iscrowd": 0, "num_keypoints": 0,
                        "bbox": [60, 60, 20, 40], "area": 800.0, "keypoints": [0] * 51})
    return write_coco_json(folder / "ann.json", images, annotations)


@pytest.fixture
def coco(tmp_path):
    return write_coco(tmp_path, {1: [(25, 20, 1.0)], 2: [(45, 5, 1.0)]}), tmp_path / "images"  # dots on integer keypoints


def dot_centre(crop, channel):
    """Centroid of the pixels of one dot colour in a (3, H, W) uint8 RGB crop, or None."""
    rgb = crop.numpy().astype(np.float32)
    others = [c for c in range(3) if c != channel]
    weight = np.clip(rgb[channel] - rgb[others].max(0) - 40, 0, None)
    if weight.sum() < 100:
        return None
    ys, xs = np.indices(weight.shape)
    return (weight * xs).sum() / weight.sum(), (weight * ys).sum() / weight.sum()


def test_instances_are_labelled_non_crowd_people(coco):
    dataset = TopDownDataset([Source(str(coco[0]), str(coco[1]))], (128, 96))
    assert len(dataset) == 2 and dataset.paths[0].endswith("1.png")
    item = dataset[0]
    assert item["image"].shape == (3, 128, 96) and item["image"].dtype == torch.uint8
    assert item["keypoints"].shape == (NUM_KEYPOINTS, 3)


def test_keypoints_land_on_their_dots_and_flip_swaps_left_and_right(coco):
    dataset = TopDownDataset([Source(str(coco[0]), str(coco[1]))], (128, 96), seed=5)
    flips, checked = set(), 0
    for position in range(60):
        index = position % 2
        flip = dataset.crop_params(index, np.random.default_rng([5, position]))[3]
        item = dataset[(index, position)]
        flips.add(flip)
        keypoints = item["keypoints"].numpy()
        for k, (_, channel) in DOTS.items():
            # a flipped crop mirrors the person: the left shoulder now is the other dot
            shown = {L_SHO: R_SHO, R_SHO: L_SHO}.get(k, k) if flip else k
            x, y, v = keypoints[k]
            assert v > 0
            centre = dot_centre(item["image"], DOTS[shown][1])
            if 4 <= x <= 96 - 5 and 4 <= y <= 128 - 5 and centre is not None:
                assert centre == pytest.approx((x, y), abs=1.0), (position, k, flip)
                checked += 1
    assert flips == {False, True} and checked > 100


def test_targets_decode_to_the_annotation_through_the_inference_pipeline(coco):
    """Training crop -> targets -> TopDownPipeline's crop, decoding and inverse affine ->
    the annotated keypoints, within half a heatmap pixel: training and inference agree."""
    dataset = TopDownDataset([Source(str(coco[0]), str(coco[1]))], (256, 192), seed=1)
    annotated = dataset.samples[0].keypoints
    frame = dataset.read_image(0)
    position = next(p for p in range(50) if not dataset.crop_params(0, np.random.default_rng([1, p]))[3]
                    and dataset.crop_params(0, np.random.default_rng([1, p]))[2] != 0)
    for rng in (None, np.random.default_rng([1, position])):
        center, width, rotation, flip = dataset.crop_params(0, rng)
        item = dataset.sample(0, None if rng is None else np.random.default_rng([1, position]))
        targets, weights = render_topdown_targets(item["keypoints"][None], (64, 48), (256, 192))
        assert weights.sum() == NUM_KEYPOINTS
        decoded = decode_heatmaps(targets.numpy())[0]
        to_image = cv2.invertAffineTransform(crop_affine(center, width, (48, 64), rotation))
        back = apply_affine(decoded[:, :2], to_image)
        tolerance = 0.5 * 4 * width / 192 * np.sqrt(2) + 1e-3
        assert np.hypot(*(back - annotated[:, :2]).T).max() <= tolerance
        if rng is None:  # the inference pipeline's own crop of the box, fed these targets
            runner = lambda batch: (targets.numpy(),)  # noqa: E731
            box = dataset.samples[0].box[None]
            pipeline = TopDownPipeline(lambda f: (box, np.ones(1, np.float32)), runner, (256, 192),
                                       flip_test=False)
            people = pipeline(frame)
            assert np.hypot(*(people.keypoints[0, :, :2] - annotated[:, :2]).T).max() <= tolerance


def fake_movenet_backbone(path):
    from pose_core.models.bottomup import MOBILENETV2_BLOCKS, movenet_layer_names
    from pose_core.models.mobilenetv2_pose import build_mobilenetv2_backbone

    backbone, generator = build_mobilenetv2_backbone(), torch.Generator().manual_seed(0)
    state = {}
    for name, module_path in movenet_layer_names(len(MOBILENETV2_BLOCKS), final_conv=True):
        conv = backbone.get_submodule(module_path).conv
        state[f"{name}.weight"] = torch.randn(conv.weight.shape, generator=generator) * 0.1
        state[f"{name}.bias"] = torch.zeros(conv.out_channels)
    torch.save(state, path)
    return path


class TinyHeatmapNet(torch.nn.Module):
    """Stand-in with the network's contract: RGB 0..255 in, 17 heatmaps at stride 4 out."""

    def __init__(self):
        super().__init__()
        self.backbone = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 4, 4), torch.nn.BatchNorm2d(16), torch.nn.ReLU())
        self.final = torch.nn.Conv2d(16, NUM_KEYPOINTS, 3, padding=1)

    def forward(self, x):
        return self.final(self.backbone(x / 127.5 - 1))


def test_training_steps_lower_the_weighted_loss_and_gradients_flow(coco):
    dataset = TopDownDataset([Source(str(coco[0]), str(coco[1]))], (128, 96))
    batch = torch.utils.data.default_collate([dataset[(i % 2, i)] for i in range(4)])
    images, targets, weights = train_topdown.training_batch(batch, (128, 96), torch.device("cpu"))
    assert images.shape == (4, 3, 128, 96) and images.dtype == torch.float32
    assert targets.shape == (4, NUM_KEYPOINTS, 32, 24) and weights.shape == (4, NUM_KEYPOINTS)
    kp = batch["keypoints"]
    inside = (kp[..., 2] > 0) & (kp[..., 0] >= 0) & (kp[..., 0] < 96) & (kp[..., 1] >= 0) & (kp[..., 1] < 128)
    assert torch.all(weights[inside] == 1) and torch.all(weights[kp[..., 2] == 0] == 0)
    torch.manual_seed(0)
    from pose_core.train.common import param_groups

    model = TinyHeatmapNet().train()
    optimizer = torch.optim.AdamW(param_groups(model, 3e-3, 1e-3, 1e-4))
    losses = [train_topdown.train_step(model, optimizer, images, targets, weights) for _ in range(10)]
    assert all(np.isfinite(losses)) and losses[-1] < 0.8 * losses[0]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_training_script_runs_evaluates_checkpoints_and_resumes(coco, tmp_path):
    ann, images = coco
    data_root = tmp_path / "data"
    write_coco(data_root / "coco_val_dev", {7: [(30, 20, 1.0)]})
    (data_root / "coco_val_dev" / "ann.json").rename(data_root / "coco_val_dev" / "person_keypoints.json")
    ckpt, log, weights = tmp_path / "run.ckpt", tmp_path / "log.csv", tmp_path / "w.pt"
    common = ["--model", "mnv2-hwloss", "--source", f"{ann}:{images}:1", "--crop", "128", "--batch", "2",
              "--workers", "0", "--ckpt", str(ckpt), "--log", str(log), "--log-every", "1",
              "--save-weights", str(weights), "--data-root", str(data_root), "--threads", "1",
              "--init-backbone", str(fake_movenet_backbone(tmp_path / "backbone.pt"))]
    train_topdown.main(common + ["--max-steps", "1"])
    first = torch.load(ckpt, weights_only=False)
    assert first["step"] == 1 and first["images_seen"] == 2 and first["pretrained_backbone"]
    train_topdown.main(common + ["--max-steps", "3", "--eval-every-minutes", "1e-9", "--eval-limit", "1"])
    second = torch.load(ckpt, weights_only=False)
    assert second["step"] == 3 and second["images_seen"] == 6
    rows = list(csv.DictReader(open(log)))
    losses = [float(r["loss"]) for r in rows if r["loss"]]
    assert len(losses) == 3 and all(np.isfinite(losses)) and all(r["variant"] == "mnv2-hwloss" for r in rows)
    assert [r["step"] for r in rows if r["AP"]] == ["2"] and 0 <= float(next(r["AP"] for r in rows if r["AP"])) <= 1
    # a resumed checkpoint takes this command's rates (heads --lr, the pretrained backbone x 0.2)
    train_topdown.main(common + ["--max-steps", "4", "--lr", "1e-5"])
    third = torch.load(ckpt, weights_only=False)
    assert third["step"] == 4
    assert sorted({g["base_lr"] for g in third["optimizer"]["param_groups"]}) == pytest.approx([2e-6, 1e-5])
    # without the checkpoint: from the fp16 weights and their progress file, which say the
    # backbone is pretrained (no --init-backbone now): it trains at x 0.2 from the first step
    ckpt.unlink()
    resume = [a for a in common if a != "--init-backbone" and not a.endswith("backbone.pt")]
    train_topdown.main(resume + ["--max-steps", "4", "--resume-weights", str(weights), "--lr", "1e-5"])
    progress = json.loads((tmp_path / "w.progress.json").read_text())
    assert progress["step"] == 4 and progress["images_seen"] == 8 and progress["model"] == "mnv2-hwloss"
    assert progress["pretrained_backbone"] and progress["crop"] == 128
    fourth = torch.load(ckpt, weights_only=False)
    assert sorted({g["base_lr"] for g in fourth["optimizer"]["param_groups"]}) == pytest.approx([2e-6, 1e-5])
    # and the checkpoint that run wrote resumes
    train_topdown.main(resume + ["--max-steps", "5", "--lr", "1e-5"])
    assert torch.load(ckpt, weights_only=False)["step"] == 5
    ckpt.unlink()
    # a warm-restart slice: one more step's worth of time, however long the resumed run was
    train_topdown.main(common + ["--more-minutes", "1e-9", "--resume-weights", str(weights)])
    assert json.loads((tmp_path / "w.progress.json").read_text())["step"] == 6
    with pytest.raises(SystemExit, match="multiple of 32"):
        train_topdown.main(common + ["--crop", "200"])
    with pytest.raises(SystemExit, match="coco_val_dev"):
        train_topdown.main(["--source", "coco_val_dev/person_keypoints.json:coco_val_dev/images:1",
                            "--data-root", str(data_root)])


def test_keep_best_writes_weights_only_when_an_evaluation_beats_the_best(coco, tmp_path, monkeypatch):
    ann, images = coco
    ckpt, weights = tmp_path / "run.ckpt", tmp_path / "w.pt"
    common = ["--model", "mnv2-hwloss", "--source", f"{ann}:{images}:1", "--crop", "128", "--batch", "2",
              "--workers", "0", "--ckpt", str(ckpt), "--log", str(tmp_path / "log.csv"),
              "--save-weights", str(weights), "--threads", "1", "--eval-every-minutes", "1e-9",
              "--init-backbone", str(fake_movenet_backbone(tmp_path / "backbone.pt"))]
    # the starting weights, then steps 1, 2, 3 and the end of the run (step 4)
    scripted = iter([0.30, 0.20, 0.35, 0.10, 0.33])
    monkeypatch.setattr(train_topdown, "evaluate_ap", lambda *args: next(scripted))
    train_topdown.main(common + ["--max-steps", "4", "--keep-best"])
    assert json.loads((tmp_path / "w.progress.json").read_text())["step"] == 2  # AP 0.35
    assert torch.load(ckpt, weights_only=False)["step"] == 4  # the checkpoint always follows the run
    assert next(scripted, None) is None


def test_sigterm_asks_the_loop_to_save_and_stop():
    import os
    import signal

    from pose_core.train.common import StopFlag

    before = signal.getsignal(signal.SIGTERM)
    with StopFlag() as stop:
        assert not stop.stop
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.stop
    assert signal.getsignal(signal.SIGTERM) is before
