"""Render the desktop app offscreen on the bundled clip and save a screenshot.

    python tools/screenshot_app.py [--model NAME] [--zoom] [--frames 20] [--out docs/app_screenshot.png]

The window uses throw-away settings, so the user's own app settings are left alone.
"""
import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PyQt6.QtCore import QSettings  # noqa: E402
from PyQt6.QtWidgets import QApplication  # noqa: E402

from app.main_window import MainWindow  # noqa: E402
from pose_core.registry import REPO_ROOT  # noqa: E402

TIMEOUT_S = 120


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=str(REPO_ROOT / "assets" / "vtest_people.mp4"))
    parser.add_argument("--model", help="model to show (default: the app's choice on a first launch)")
    parser.add_argument("--zoom", action="store_true", help="tick the Zoom box (bottom-up models)")
    parser.add_argument("--frames", type=int, default=20, help="frames to play before the screenshot")
    parser.add_argument("--out", default=str(REPO_ROOT / "docs" / "app_screenshot.png"))
    args = parser.parse_args()

    app = QApplication(sys.argv[:1])
    with tempfile.TemporaryDirectory() as settings_dir:
        window = MainWindow(settings=QSettings(str(Path(settings_dir) / "app.ini"), QSettings.Format.IniFormat))
        window.resize(1100, 820)
        window.show()
        if args.model:
            window.select_model(args.model)
        window.zoom.setChecked(args.zoom)
        model = args.model or window.model_box.currentData()
        shown = []
        window.worker.result_ready.connect(lambda r: shown.append(r) if r.fresh and r.model == model else None)
        window.open_source(args.source)
        deadline = time.monotonic() + TIMEOUT_S
        while len(shown) < args.frames and time.monotonic() < deadline:
            app.processEvents()
            time.sleep(0.01)
        if len(shown) < args.frames:
            print(f"only {len(shown)} frames with model {model} in {TIMEOUT_S} s", file=sys.stderr)
            window.close()
            return 1
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        ok = window.grab().save(args.out)
        window.close()
    print(f"{'saved' if ok else 'could not save'} {args.out} (model {model}, frame {shown[-1].frame.index}, "
          f"{len(shown[-1].people)} people)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
