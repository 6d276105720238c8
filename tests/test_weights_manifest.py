"""Every file in weights/ is described in weights/MANIFEST.json, with its true sha256."""
import hashlib
import json

from pose_core.registry import WEIGHTS_DIR

REQUIRED = ("model", "sha256", "input_size", "training", "steps", "ap_coco_val_dev", "ap_command")


def test_every_weights_file_has_a_manifest_entry_with_its_sha256():
    files = sorted(p for p in WEIGHTS_DIR.iterdir() if p.is_file() and p.name != "MANIFEST.json")
    if not files:
        return
    manifest = json.loads((WEIGHTS_DIR / "MANIFEST.json").read_text())
    entries = manifest["files"]
    for path in files:
        assert path.name in entries, f"{path.name} has no entry in weights/MANIFEST.json"
        entry = entries[path.name]
        for key in REQUIRED:
            assert key in entry, f"{path.name}: MANIFEST entry lacks '{key}'"
        assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest(), \
            f"{path.name}: sha256 differs from MANIFEST (update the entry)"
    assert set(entries) == {p.name for p in files}, "MANIFEST lists files that are not in weights/"
