import copy
import csv
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from pose_core.errors import InputError
from pose_core.skeleton import NUM_HEATMAPS, NUM_PAFS
from pose_core.train import common, train_bottomup
from pose_core.train.augment import PAD_RGB, affine_matrices, augment_batch, transform_keypoints, warp_images
from pose_core.train.data import BottomUpDataset, Source, SourceWeightedSampler, collate, load_source
from pose_core.train.targets import loss_mask_from_ignore
from conftest import write_coco_json

REPO_ROOT = Path(__file__).resolve().parent.parent
CROP = 64
R_SHO, L_SHO = 2, 5


def dot_item(x, y, keypoint_index=R_SHO, size=(90, 120)):
    """A dark image with a bright 5x5 dot whose centre is the one labelled keypoint."""
    image = np.zeros((*size, 3), np.uint8)
    image[y - 2:y + 3, x - 2:x + 3] = 255
    keypoints = np.zeros((1, 18, 3), np.float32)
    keypoints[0, keypoint_index] = (x, y, 2)
    return {"image": image, "keypoints": keypoints, "ignore_boxes": np.zeros((0, 4), np.float32),
            "center": np.array([x + 3, y - 4], np.float32), "height": np.float32(0.6 * CROP * 0.8)}


def bright_centroid(image):
    weight = image.float().mean(0)
    weight = torch.where(weight > 128, weight, torch.zeros_like(weight))
    ys, xs = torch.meshgrid(torch.arange(image.shape[1]), torch.arange(image.shape[2]), indexing="ij")
    return float((weight * xs).sum() / weight.sum()), float((weight * ys).sum() / weight.sum())


def test_dot_lands_where_the_transformed_keypoint_says_and_flip_swaps_sides():
    batch = collate([dot_item(40, 30), dot_item(70, 50), dot_item(55, 61), dot_item(30, 70)] * 4)
    generator = torch.Generator().manual_seed(3)
    images, keypoints, valid, mask = augment_batch(batch, CROP, generator)
    assert images.shape == (16, 3, CROP, CROP) and images.dtype == torch.float32
    assert keypoints.shape == (16, 1, 18, 3) and valid.all()
    assert mask.shape == (16, 1, CROP // 8, CROP // 8) and torch.all(mask == 1)
    flipped = keypoints[:, 0, L_SHO, 2] > 0
    assert flipped.any() and (~flipped).any()
    for i in range(16):
        index = L_SHO if flipped[i] else R_SHO
        assert keypoints[i, 0, [L_SHO, R_SHO][int(flipped[i])], 2] == 0  # moved, not copied
        x, y = keypoints[i, 0, index, :2].tolist()
        if 3 <= x <= CROP - 4 and 3 <= y <= CROP - 4:
            assert bright_centroid(images[i]) == pytest.approx((x, y), abs=0.6)


def test_fixed_affine_with_and_without_flip():
    item = dot_item(40, 30)
    batch = collate([item, item])
    centers = torch.tensor([[40.0, 30.0]] * 2)
    matrices = affine_matrices(centers, torch.tensor([1.0, 1.0]), torch.tensor([0.3, 0.3]),
                               torch.tensor([[5.0, -3.0]] * 2), torch.tensor([False, True]), CROP)
    expected = torch.tensor([(CROP - 1) / 2 + 5, (CROP - 1) / 2 - 3])
    kp = transform_keypoints(batch["keypoints"], matrices, torch.tensor([False, True]))
    assert kp[0, 0, R_SHO, :2].tolist() == pytest.approx(expected.tolist(), abs=1e-4)
    assert kp[1, 0, L_SHO, :2].tolist() == pytest.approx([CROP - 1 - expected[0].item(), expected[1].item()], abs=1e-4)
    canvas = batch["images"].permute(0, 3, 1, 2).float()
    warped = warp_images(canvas, matrices, CROP)
    assert bright_centroid(warped[0]) == pytest.approx(expected.tolist(), abs=0.3)
    assert bright_centroid(warped[1]) == pytest.approx([CROP - 1 - expected[0].item(), expected[1].item()], abs=0.3)


def test_padding_outside_the_image_is_the_mean_colour():
    batch = collate([dot_item(40, 30)])
    batch["heights"][:] = 500.0  # tiny scale: most of the crop is outside the image
    images, *_ = augment_batch(batch, CROP, torch.Generator().manual_seed(0))
    corner = images[0, :, 0, 0]
    assert corner.tolist() == pytest.approx(list(PAD_RGB), abs=1e-3)


def write_coco(tmp_path, images, annotations, name="ann.json"):
    (tmp_path / "images").mkdir(exist_ok=True)
    for image in images:
        cv2.imwrite(str(tmp_path / "images" / image["file_name"]),
                    np.full((image["height"], image["width"], 3), 90, np.uint8))
    return write_coco_json(tmp_path / name, images, annotations)


def standing_person(image_id, ann_id, x0=20, y0=10, scale=1.0):
    kp = np.zeros((17, 3))
    for j, (dx, dy) in enumerate([(20, 0), (22, -2), (18, -2), (25, 0), (15, 0), (30, 15), (10, 15),
                                  (33, 35), (7, 35), (34, 55), (6, 55), (27, 60), (13, 60),
                                  (27, 85), (13, 85), (27, 110), (13, 110)]):
        kp[j] = (x0 + dx * scale, y0 + dy * scale, 2)
    return {"id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0, "num_keypoints": 17,
            "keypoints": kp.ravel().tolist(), "bbox": [x0 + 5 * scale, y0 - 3 * scale, 32 * scale, 115 * scale],
            "area": 3000.0 * scale * scale}


def test_unlabelled_people_and_crowds_are_masked_not_background(tmp_path):
    ann = write_coco(tmp_path, [{"id": 1, "file_name": "a.jpg", "width": 160, "height": 128}], [
        standing_person(1, 1),
        {"id": 2, "image_id": 1, "category_id": 1, "iscrowd": 0, "num_keypoints": 0,
         "keypoints": [0] * 51, "bbox": [96, 32, 32, 48], "area": 800.0},
        {"id": 3, "image_id": 1, "category_id": 1, "iscrowd": 1, "num_keypoints": 0,
         "bbox": [0, 120, 16, 8], "area": 100.0}])
    (record,) = load_source(ann, tmp_path / "images")
    assert record.keypoints.shape == (1, 18, 3)
    assert record.ignore_boxes.tolist() == [[96, 32, 128, 80], [0, 120, 16, 128]]
    item = BottomUpDataset([Source(str(ann), str(tmp_path / "images"))], crop=256)[0]
    batch = collate([item])
    identity = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    ignore = warp_images(batch["ignore"][:, None].float(), identity, 128)   # crop = top-left 128x128
    mask = loss_mask_from_ignore(ignore)[0, 0]
    expected = torch.ones(16, 16)
    expected[4:10, 12:16] = 0   # the unlabelled person's box, in cells
    expected[15, 0:2] = 0       # the crowd box
    assert torch.allclose(mask, expected, atol=1e-5)


def test_sampler_frequencies_follow_the_source_weights():
    source_of_item = np.repeat([0, 1, 2, 3], [10, 1000, 5, 7])
    sampler = SourceWeightedSampler(source_of_item, [1.0, 2.0, 1.0, 0.0], seed=1)
    stream = iter(sampler)
    draws = np.array([next(stream) for _ in range(20000)])
    shares = np.bincount(source_of_item[draws], minlength=4) / len(draws)
    assert shares == pytest.approx([0.25, 0.5, 0.25, 0.0], abs=0.015)
    assert set(draws[source_of_item[draws] == 2]) == set(range(1010, 1015))  # uniform within a source
    again = iter(SourceWeightedSampler(source_of_item, [1.0, 2.0, 1.0, 0.0], seed=1))
    resumed = iter(SourceWeightedSampler(source_of_item, [1.0, 2.0, 1.0, 0.0], seed=1, start=16))
    assert [next(again) for _ in range(50)] == draws[:50].tolist()
    assert [next(resumed) for _ in range(50)] != draws[:50].tolist()
    with pytest.raises(InputError):
        SourceWeightedSampler(source_of_item, [0, 0, 0, 0])


class TinyTwoStageNet(nn.Module):
    """Stand-in with the network's contract: stride 8, a list of (heatmaps, pafs) per stage."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 8, 3, 8, 1), nn.BatchNorm2d(8), nn.ReLU())
        self.initial_stage = nn.Conv2d(8, NUM_HEATMAPS + NUM_PAFS, 1)
        self.refinement = nn.Conv2d(8 + NUM_HEATMAPS + NUM_PAFS, NUM_HEATMAPS + NUM_PAFS, 3, padding=1)

    def backbone_features(self, x):
        return self.backbone(x / 127.5 - 1)

    def stage_outputs(self, features, num_stages=None, frozen_stages=0):
        with torch.set_grad_enabled(torch.is_grad_enabled() and frozen_stages == 0):
            outputs = [self.initial_stage(features)]
        if num_stages is None or num_stages > 1:
            outputs.append(self.refinement(torch.cat([features, outputs[0]], 1)))
        return [(o[:, :NUM_HEATMAPS], o[:, NUM_HEATMAPS:]) for o in outputs]


def test_training_steps_reduce_the_masked_loss_and_gradients_flow():
    torch.manual_seed(0)
    batch = collate([dot_item(40, 30), dot_item(70, 50)])
    images, heatmaps, pafs, mask = train_bottomup.training_batch(batch, CROP, torch.Generator().manual_seed(0), "cpu")
    assert heatmaps.shape == (2, 19, 8, 8) and pafs.shape == (2, 38, 8, 8)
    model = TinyTwoStageNet()
    optimizer = torch.optim.AdamW(common.param_groups(model, 3e-3, 1e-3, 1e-4))
    assert sorted(g["lr"] for g in optimizer.param_groups) == [1e-3, 1e-3, 3e-3, 3e-3]
    losses = [train_bottomup.train_step(model, optimizer, images, heatmaps, pafs, mask) for _ in range(8)]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_heads_train_on_frozen_features_and_stage_one_alone_leaves_the_refinement():
    torch.manual_seed(0)
    batch = collate([dot_item(40, 30), dot_item(70, 50)])
    images, heatmaps, pafs, mask = train_bottomup.training_batch(batch, CROP, torch.Generator().manual_seed(0), "cpu")
    model = TinyTwoStageNet()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(common.param_groups(model, 3e-3, 1e-3, 1e-4))
    with torch.no_grad():
        features = model.backbone_features(images)
    losses = [train_bottomup.train_heads_step(model, optimizer, features, heatmaps, pafs, mask, num_stages=1)
              for _ in range(8)]
    assert losses[-1] < losses[0]
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert changed == {"initial_stage.weight", "initial_stage.bias"}
    # the refinement alone: the loss leaves out the frozen initial stage
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    losses = [train_bottomup.train_heads_step(model, optimizer, features, heatmaps, pafs, mask, num_stages=2,
                                              frozen_stages=1) for _ in range(8)]
    assert losses[-1] < losses[0]
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert changed == {"refinement.weight", "refinement.bias"}


def test_replay_buffer_keeps_the_latest_samples_in_a_ring():
    buffer = train_bottomup.ReplayBuffer(capacity=3)
    for start in (0, 2):  # samples 0, 1, then 2, 3: sample 3 overwrites sample 0
        values = torch.arange(start, start + 2, dtype=torch.float32)
        buffer.add(values[:, None, None] * torch.ones(2, 4, 5), -values[:, None] * torch.ones(2, 6))
    assert buffer.size == 3
    features, targets = buffer.sample(64, torch.Generator().manual_seed(0), "cpu")
    assert features.shape == (64, 4, 5) and features.dtype == torch.float32 and targets.shape == (64, 6)
    assert set(features[:, 0, 0].tolist()) == {1.0, 2.0, 3.0}
    assert torch.equal(targets[:, 0], -features[:, 0, 0])  # a sample's tensors stay together


def test_loss_ignores_masked_cells_and_sums_stages():
    heatmaps, pafs = torch.zeros(2, 19, 4, 4), torch.zeros(2, 38, 4, 4)
    mask = torch.ones(2, 1, 4, 4)
    mask[:, :, 0, 0] = 0
    wrong_where_masked = torch.zeros(2, 19, 4, 4)
    wrong_where_masked[:, :, 0, 0] = 5.0
    assert train_bottomup.bottomup_loss([(wrong_where_masked, pafs)], heatmaps, pafs, mask) == 0
    ones = (torch.ones_like(heatmaps), torch.ones_like(pafs))
    # per stage sum((1 * mask)^2) / 2 / batch over 15 unmasked cells of 19 + 38 channels
    expected = 2 * (19 + 38) * 15 / 2 / 2
    assert train_bottomup.bottomup_loss([ones, ones], heatmaps, pafs, mask).item() == pytest.approx(2 * expected)


def test_lr_warms_up_then_decays():
    assert common.lr_factor(0, 0.0, 10) == pytest.approx(0.1)
    assert common.lr_factor(9, 0.0, 10) == pytest.approx(1.0)
    assert common.lr_factor(100, 0.5, 10) == pytest.approx(0.525)
    assert common.lr_factor(100, 1.0, 10) == pytest.approx(0.05)


def test_training_script_runs_and_resumes(tmp_path):
    ann = write_coco(tmp_path, [{"id": i, "file_name": f"{i}.jpg", "width": 96, "height": 140} for i in (1, 2)],
                     [standing_person(1, 1), standing_person(2, 2, x0=30, y0=20, scale=0.9)])
    ckpt, log = tmp_path / "run.ckpt", tmp_path / "log.csv"
    common = ["--model", "ldlc-openpose", "--source", f"{ann}:{tmp_path / 'images'}:1", "--crop", "64",
              "--batch", "2", "--workers", "0", "--ckpt", str(ckpt), "--log", str(log),
              "--log-every", "1", "--save-weights", str(tmp_path / "w.pt")]
    train_bottomup.main(common + ["--max-steps", "1"])
    first = torch.load(ckpt, weights_only=False)
    assert first["step"] == 1 and first["images_seen"] == 2
    train_bottomup.main(common + ["--max-steps", "2"])
    second = torch.load(ckpt, weights_only=False)
    assert second["step"] == 2 and second["images_seen"] == 4
    rows = list(csv.DictReader(open(log)))
    assert [r["step"] for r in rows] == ["1", "2"] and all(np.isfinite(float(r["loss"])) for r in rows)
    assert (tmp_path / "w.pt").is_file()
    # Without the optimiser checkpoint, training resumes from the committed weights + progress file.
    ckpt.unlink()
    train_bottomup.main(common + ["--max-steps", "3", "--resume-weights", str(tmp_path / "w.pt")])
    progress = json.loads((tmp_path / "w.progress.json").read_text())
    assert progress["step"] == 3 and progress["images_seen"] == 6 and progress["model"] == "ldlc-openpose"
    # Each run's options travel with the weights: the checkpointed runs, then the resumed one.
    runs = progress["runs"]
    assert [(r["from_images"], r["to_images"]) for r in runs] == [(0, 2), (2, 4), (4, 6)]
    assert [r["options"]["max_steps"] for r in runs] == [1, 2, 3] and runs[0]["options"]["resume_weights"] is None
    assert runs[2]["options"]["resume_weights"] == str(tmp_path / "w.pt") and runs[2]["options"]["crop"] == 64
    with pytest.raises(SystemExit, match="coco_val_dev"):
        train_bottomup.main(["--source", "coco_val_dev/person_keypoints.json:coco_val_dev/images:1"])
    # Heads on the frozen backbone with replay: the backbone stays as it was, the CPM moves,
    # and one step of the log is one fresh batch.
    start = torch.load(tmp_path / "w.pt", weights_only=True)
    train_bottomup.main(common + ["--max-steps", "5", "--freeze-backbone", "--train-stages", "1",
                                  "--replay", "3", "--replay-buffer", "8", "--snapshot-minutes", "1e-9"])
    end = torch.load(tmp_path / "w.pt", weights_only=True)
    # a snapshot after each step but the last (the final weights are w.pt), named by images seen
    assert sorted(p.name for p in tmp_path.glob("w.*.pt")) == ["w.8.pt"]
    assert json.loads((tmp_path / "w.progress.json").read_text())["images_seen"] == 10
    assert list(csv.DictReader(open(log)))[-1]["variant"] == "ldlc-openpose initial stage"
    assert all(torch.equal(end[k], v) for k, v in start.items() if k.startswith("backbone."))
    assert not all(torch.equal(end[k], v) for k, v in start.items() if k.startswith("cpm."))
    assert all(torch.equal(end[k], v) for k, v in start.items() if k.startswith("refinement_stages."))
    # The initial stage with the backbone: its own curve in the log.
    train_bottomup.main(common + ["--max-steps", "6", "--train-stages", "1"])
    assert list(csv.DictReader(open(log)))[-1]["variant"] == "ldlc-openpose backbone + initial stage"
    changed = torch.load(tmp_path / "w.pt", weights_only=True)
    assert not all(torch.equal(changed[k], v) for k, v in end.items() if k.startswith("backbone."))
    end = changed
    # The refinement stage alone, on the frozen backbone, CPM and initial stage (BN statistics too).
    train_bottomup.main(common + ["--max-steps", "8", "--freeze-backbone", "--train-stages", "2",
                                  "--frozen-stages", "1", "--replay", "2", "--replay-buffer", "8"])
    after = torch.load(tmp_path / "w.pt", weights_only=True)
    assert list(csv.DictReader(open(log)))[-1]["variant"] == "ldlc-openpose stage 2"
    assert all(torch.equal(after[k], v) for k, v in end.items() if not k.startswith("refinement_stages."))
    assert not all(torch.equal(after[k], v) for k, v in end.items() if k.startswith("refinement_stages."))
    with pytest.raises(SystemExit):
        train_bottomup.main(common + ["--replay", "2"])  # replay needs the frozen backbone
    with pytest.raises(SystemExit):  # frozen stages need a frozen backbone and a later stage to train
        train_bottomup.main(common + ["--freeze-backbone", "--train-stages", "1", "--frozen-stages", "1"])


def test_loader_workers_leave_ctrl_c_and_sigterm_to_the_main_process():
    # `pkill -f train_bottomup` signals the workers too: a dead worker would crash the final save.
    # A fresh interpreter: a worker forked from this test process can deadlock in its thread pools.
    probe = ("import signal; from pose_core.train.data import _worker_init; _worker_init(0); "
             "print([signal.getsignal(s) == signal.SIG_IGN for s in (signal.SIGINT, signal.SIGTERM)])")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.stdout.strip() == "[True, True]", result.stderr


def fake_movenet_backbone(width):
    """A converted MoveNet backbone's state dict (tools/convert_movenet_backbone.py's keys and
    shapes) with random values: a plain MobileNetV2 of that width names its layers' shapes."""
    from pose_core.models.bottomup import MobileNetV2Backbone, movenet_layer_names
    plain = MobileNetV2Backbone(6, 1, width=width)
    generator = torch.Generator().manual_seed(0)
    state = {}
    for movenet_name, path in movenet_layer_names():
        conv = plain.get_submodule(path).conv
        state[f"{movenet_name}.weight"] = torch.randn(conv.weight.shape, generator=generator) * 0.1
        state[f"{movenet_name}.bias"] = torch.randn(conv.out_channels, generator=generator) * 0.1
    return state


def test_backbone_swap_keeps_the_heads_that_fit(tmp_path):
    """--init-backbone with --resume-weights: MultiPose's wider backbone under ldlc-openpose-t6's
    CPM and initial stage (t6w15 has no refinement stage); only the CPM's first conv, which reads
    the wider features, starts afresh."""
    from pose_core.models.io import save_torch_weights
    from pose_core.registry import get_spec
    ann = write_coco(tmp_path, [{"id": 1, "file_name": "1.jpg", "width": 96, "height": 140}],
                     [standing_person(1, 1)])
    heads_from = tmp_path / "t6.pt"
    save_torch_weights(get_spec("ldlc-openpose-t6").build(), heads_from)
    torch.save(fake_movenet_backbone(1.5), tmp_path / "multipose.pt")
    common = ["--model", "ldlc-openpose-t6w15", "--source", f"{ann}:{tmp_path / 'images'}:1", "--crop", "64",
              "--batch", "1", "--workers", "0", "--log", str(tmp_path / "log.csv"),
              "--save-weights", str(tmp_path / "w15.pt"), "--resume-weights", str(heads_from)]
    # one step at rate 0 on the frozen backbone: the weights as the swap left them
    train_bottomup.main(common + ["--init-backbone", str(tmp_path / "multipose.pt"), "--max-steps", "1",
                                  "--lr", "0", "--freeze-backbone", "--train-stages", "1"])
    swapped = torch.load(tmp_path / "w15.pt", weights_only=True)
    t6 = torch.load(heads_from, weights_only=True)
    backbone = fake_movenet_backbone(1.5)
    assert torch.equal(swapped["backbone.stem.conv.weight"], backbone["Conv1.weight"].half())
    assert torch.equal(swapped["backbone.stem.bn.bias"], backbone["Conv1.bias"].half())
    head_weights = [k for k in swapped if not k.startswith("backbone.") and k.endswith((".weight", ".bias"))]
    assert [k for k in head_weights if not torch.equal(swapped[k], t6[k])] == ["cpm.align.conv.weight"]
    assert swapped["cpm.align.conv.weight"].shape[1] == 144
    progress = json.loads((tmp_path / "w15.progress.json").read_text())
    assert progress["model"] == "ldlc-openpose-t6w15" and progress["pretrained_backbone"]
    # Without --init-backbone, the weights of another network do not load: a one-line error.
    with pytest.raises(SystemExit, match="do not fit model ldlc-openpose-t6w15: .* --init-backbone swaps"):
        train_bottomup.main(common + ["--max-steps", "1"])
    # Nor does a damaged weights file, or a damaged backbone file.
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(heads_from.read_bytes()[:1000])
    with pytest.raises(SystemExit, match="cannot read weights .*damaged.pt: truncated"):
        train_bottomup.main(common[:-1] + [str(damaged), "--max-steps", "1"])
    with pytest.raises(SystemExit, match="cannot read weights .*damaged.pt: truncated"):
        train_bottomup.main(common + ["--init-backbone", str(damaged), "--max-steps", "1"])


def test_heatmap_teacher_holds_multipose_heatmaps_while_the_feature_extractor_trains():
    from pose_core.models.multipose_fpn import LDLCOpenPoseFPN

    batch = collate([dot_item(40, 30), dot_item(70, 50)])
    images, heatmaps, pafs, mask = train_bottomup.training_batch(batch, CROP, torch.Generator().manual_seed(0), "cpu")

    def drift_after_training(heatmap_weight):
        torch.manual_seed(0)
        model = LDLCOpenPoseFPN().train()
        common.freeze_batchnorm(model.backbone)  # as a run from pretrained weights does
        teacher = copy.deepcopy(model.backbone).eval().requires_grad_(False)

        def drift():
            with torch.no_grad():
                return train_bottomup.heatmap_distillation(
                    model.backbone_features(images), teacher(model.normalise(images)), 1.0).item()

        assert drift() == 0.0  # the same weights: nothing to hold
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        for _ in range(6):
            train_bottomup.train_step(model, optimizer, images, heatmaps, pafs, mask, num_stages=1,
                                      heatmap_teacher=teacher, heatmap_weight=heatmap_weight)
        return drift()

    free, held = drift_after_training(0.0), drift_after_training(100.0)
    assert free > 0 and held < 0.5 * free


def test_heatmap_teacher_needs_a_training_feature_extractor():
    with pytest.raises(SystemExit):
        train_bottomup.parse_args(["--heatmap-teacher", "x.pt", "--freeze-backbone"])
