"""Soak-test the desktop app offscreen: a looping clip, as fast as the model goes, for minutes.

    python tools/gui_soak.py [--model NAME] [--minutes 10] [--video assets/vtest_people.mp4]
                             [--interval 30] [--json OUT]

Every interval prints frames, FPS, the mean end-to-end latency and network time the status
bar shows, people per frame and the process RSS; the summary says how much the RSS grew.
The window uses throw-away settings, so the user's own app settings are left alone.
"""
import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PyQt6.QtCore import QSettings, Qt, QTimer  # noqa: E402
from PyQt6.QtWidgets import QApplication  # noqa: E402

from app.main_window import MainWindow, registry_choices  # noqa: E402
from pose_core import registry  # noqa: E402
from pose_core.registry import REPO_ROOT  # noqa: E402

LOAD_TIMEOUT_S = 120


def rss_mib():
    """This process's resident memory (VmRSS of /proc/self/status) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def mean_ms(total_s, count):
    return round(1000 * total_s / count, 1) if count else None


class SoakMeter:
    """Totals over one interval of the fresh results of `model`, measured as the status bar does."""

    def __init__(self, model):
        self.model = model
        self.frames = 0          # over the whole soak
        self.rows = []
        self._clear()

    def _clear(self):
        self.count = self.people = self.with_network = 0
        self.latency_s = self.network_s = 0.0

    def on_result(self, result):
        if not result.fresh or result.model != self.model:
            return
        self.count += 1
        self.latency_s += time.perf_counter() - result.frame.captured_at
        self.people += len(result.people)
        network = result.people.timings.get("network")
        if network is not None:   # MoveNet pipelines time themselves as a whole, with no network entry
            self.with_network += 1
            self.network_s += network

    def close_interval(self, elapsed_s, interval_s):
        """Print the interval's line and start the next interval."""
        self.frames += self.count
        row = {"elapsed_s": round(elapsed_s, 1), "frames": self.frames, "fps": round(self.count / interval_s, 2),
               "latency_ms": mean_ms(self.latency_s, self.count),
               "network_ms": mean_ms(self.network_s, self.with_network),
               "people": round(self.people / self.count, 2) if self.count else None, "rss_mib": round(rss_mib(), 1)}
        self.rows.append(row)
        print(f"{row['elapsed_s']:7.1f} s  {row['frames']:7d} frames  {row['fps']:6.2f} fps  "
              f"latency {_shown(row['latency_ms'], ' ms')}  network {_shown(row['network_ms'], ' ms')}  "
              f"{_shown(row['people'])} people/frame  RSS {row['rss_mib']:.1f} MiB", flush=True)
        self._clear()


def _shown(value, unit=""):
    return "-" if value is None else f"{value:.1f}{unit}"


def wait_until(app, condition, timeout_s):
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.01)
    return condition()


def soak(app, window, meter, video, duration_s, interval_s):
    """Play `video` for `duration_s`, closing an interval every `interval_s`; an error in the window
    stops it early. Returns the seconds played."""
    started = last = time.perf_counter()
    timer = QTimer()
    timer.setSingleShot(True)
    timer.setTimerType(Qt.TimerType.PreciseTimer)

    def tick():
        nonlocal last
        now = time.perf_counter()
        meter.close_interval(now - started, now - last)
        last = now
        remaining = duration_s - (now - started)
        if window.error_box is not None or remaining <= 0.05 * interval_s:
            app.quit()
        else:
            timer.start(round(1000 * min(interval_s, remaining)))

    timer.timeout.connect(tick)
    timer.start(round(1000 * min(interval_s, duration_s)))
    window.open_source(video)
    app.exec()
    return last - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model",
                        help="model to run (default: the registry's default, else the first one with weights)")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--video", default=str(REPO_ROOT / "assets" / "vtest_people.mp4"))
    parser.add_argument("--interval", type=float, default=30.0, help="seconds between report lines")
    parser.add_argument("--json", help="write the summary and the interval rows to this file")
    args = parser.parse_args()
    if args.minutes <= 0 or args.interval <= 0:
        parser.error("--minutes and --interval must be positive")

    # Refused before the window starts loading a model: a load cut off at exit aborts the process.
    status = {choice.name: choice.status for choice in registry_choices()}
    model = args.model or (registry.DEFAULT_MODEL if status.get(registry.DEFAULT_MODEL) == "ready" else
                           next((name for name, state in status.items() if state == "ready"), None))
    if status.get(model) != "ready":
        print(f"model {model} cannot run: {status.get(model, 'unknown model')}" if model
              else "no model has trained weights", file=sys.stderr)
        return 1

    app = QApplication(sys.argv[:1])
    meter = SoakMeter(model)
    with tempfile.TemporaryDirectory() as settings_dir:
        settings = QSettings(str(Path(settings_dir) / "app.ini"), QSettings.Format.IniFormat)
        settings.setValue("model", model)   # the window loads it, and only it, as it starts
        settings.setValue("realtime", False)
        settings.setValue("loop", True)
        window = MainWindow(settings=settings)
        window.show()
        window.worker.result_ready.connect(meter.on_result)
        if not wait_until(app, lambda: window.worker.model == model or window.error_box is not None, LOAD_TIMEOUT_S):
            window.show_error(f"model {model} did not load in {LOAD_TIMEOUT_S} s")
        seconds = 0.0
        if window.error_box is None:
            seconds = soak(app, window, meter, args.video, 60 * args.minutes, args.interval)
        error = window.error_box.text() if window.error_box is not None else None
        window.close()
    left = [t.name for t in threading.enumerate() if t.name in ("capture", "inference") and t.is_alive()]
    if error:
        print(f"stopped by an error: {error}", file=sys.stderr)
    if left:
        print(f"threads still running after closing the window: {left}", file=sys.stderr)
    if error or left:
        return 1

    summary = {"model": model, "video": str(args.video), "seconds": round(seconds, 1), "frames": meter.frames,
               "mean_fps": round(meter.frames / seconds, 2), "rss_first_mib": meter.rows[0]["rss_mib"],
               "rss_end_mib": meter.rows[-1]["rss_mib"],
               "rss_growth_mib": round(meter.rows[-1]["rss_mib"] - meter.rows[0]["rss_mib"], 1)}
    print(f"{model}: {summary['frames']} frames in {summary['seconds']} s, mean {summary['mean_fps']} fps; "
          f"RSS {summary['rss_first_mib']} MiB at the first interval, {summary['rss_end_mib']} MiB at the end "
          f"({summary['rss_growth_mib']:+.1f} MiB)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({**summary, "intervals": meter.rows}, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
