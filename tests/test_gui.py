"""The desktop app driven for real (offscreen): the bundled clip, fake pipelines injected
through MainWindow's `load_pipeline` hook, and the real model when its weights exist.
QT_QPA_PLATFORM=offscreen is set by conftest.py."""
import re
import threading

import cv2
import numpy as np
import pytest
from PyQt6.QtCore import QMimeData, QPointF, QSettings, Qt, QUrl
from PyQt6.QtGui import QDropEvent

from app.main_window import MainWindow, ModelChoice, registry_choices
from app.workers import Recording
from pose_core import registry
from pose_core.errors import ModelUnavailable
from pose_core.keypoint_export import read_keypoint_export
from pose_core.result import People

CLIP = str(registry.REPO_ROOT / "assets" / "vtest_people.mp4")
STILL = str(registry.REPO_ROOT / "assets" / "basketball.png")
WAIT_MS = 15000

# A stick figure in COCO-17 order, relative to its centre.
FIGURE = np.array([(0, -75), (8, -82), (-8, -82), (15, -75), (-15, -75), (30, -45), (-30, -45),
                   (45, -15), (-45, -15), (52, 15), (-52, 15), (18, 15), (-18, 15),
                   (18, 60), (-18, 60), (18, 105), (-18, 105)], dtype=np.float32)


def figure_at(cx, cy):
    """(17, 3) keypoints of the figure centred at (cx, cy), all with score 0.9."""
    return np.concatenate([FIGURE + (cx, cy), np.full((17, 1), 0.9, np.float32)], 1)


class FakePipeline:
    """One person at a fixed place, whatever the frame."""

    def __init__(self, cx, cy):
        self.keypoints = figure_at(cx, cy)

    def __call__(self, frame):
        people = People.from_keypoints(self.keypoints[None], [0.9])
        people.timings = {"preprocess": 0.001, "network": 0.002, "grouping": 0.001}
        return people


class FakeLoader:
    """The window's `load_pipeline` hook: fake models by name; `gates` hold a load back."""

    def __init__(self):
        self.pipelines = {"fake-left": FakePipeline(200, 200), "fake-right": FakePipeline(450, 250)}
        self.gates = {}   # name -> threading.Event that loading waits for

    def __call__(self, name):
        if name not in self.pipelines:
            raise ModelUnavailable(f"model '{name}' cannot run: no trained weights")
        if name in self.gates:
            self.gates[name].wait(WAIT_MS / 1000)
        return self.pipelines[name]


FAKE_MODELS = [ModelChoice("fake-left", "fake-left", "ready"), ModelChoice("fake-right", "fake-right", "ready"),
               ModelChoice("no-weights", "no-weights", "no trained weights (weights/x.onnx missing)")]


@pytest.fixture(autouse=True)
def temporary_settings(tmp_path):
    """Every QSettings of these tests, default ones included, lives in tmp_path."""
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "qsettings"))
    yield QSettings(str(tmp_path / "app.ini"), QSettings.Format.IniFormat)
    QSettings.setDefaultFormat(QSettings.Format.NativeFormat)


@pytest.fixture
def make_window(qtbot, temporary_settings):
    def make(models=FAKE_MODELS, loader=None, settings=temporary_settings):
        kwargs = {} if loader is None and models is None else {"load_pipeline": loader or FakeLoader()}
        window = MainWindow(settings=settings, models=models, **kwargs)
        qtbot.addWidget(window)
        window.show()
        return window
    return make


def collect(window):
    results = []
    window.worker.result_ready.connect(results.append)
    return results


def wait_for(qtbot, condition, timeout=WAIT_MS):
    qtbot.waitUntil(condition, timeout=timeout)


def changed_pixels(result):
    return np.abs(result.image.astype(int) - result.frame.image.astype(int)).sum(-1) > 0


def changed_at(result, points):
    """Whether the overlay changed the frame at each (x, y) of `points`."""
    points = np.round(points[:, :2]).astype(int)
    return changed_pixels(result)[points[:, 1], points[:, 0]]


def overlay_checks(result, keypoints):
    """The annotated frame differs from the raw one at every keypoint and nowhere far from them."""
    assert changed_at(result, keypoints).all()
    changed = changed_pixels(result)
    xs, ys = np.round(keypoints[:, 0]).astype(int), np.round(keypoints[:, 1]).astype(int)
    far = np.ones_like(changed)
    far[ys.min() - 30:ys.max() + 31, xs.min() - 30:xs.max() + 31] = False  # the id label sits above
    assert not changed[far].any()


def test_clip_plays_with_the_skeleton_drawn_where_the_person_is(qtbot, make_window):
    window = make_window()
    results = collect(window)
    window.open_source(CLIP)
    wait_for(qtbot, lambda: any(r.model == "fake-left" and r.fresh for r in results))
    result = next(r for r in results if r.model == "fake-left" and r.fresh)
    assert result.image.shape == (480, 640, 3)
    overlay_checks(result, figure_at(200, 200))
    assert window.source_info.size == (640, 480) and window.source_info.frame_count == 120
    wait_for(qtbot, lambda: "1 people" in window.stats.text() and "network 2 ms" in window.stats.text())
    assert "fps" in window.stats.text() and "latency" in window.stats.text()
    assert window.view.image is window.last_result.qimage


def test_model_switch_mid_stream_keeps_the_video_playing_while_the_model_loads(qtbot, make_window):
    loader = FakeLoader()
    loader.gates["fake-right"] = threading.Event()
    window = make_window(loader=loader)
    results = collect(window)
    window.open_source(CLIP)
    wait_for(qtbot, lambda: any(r.model == "fake-left" for r in results))
    capture = window.capture
    window.model_box.setCurrentIndex(window.model_box.findData("fake-right"))
    # The new model is still loading: frames keep coming from the old one.
    shown = len(results)
    wait_for(qtbot, lambda: len(results) >= shown + 5)
    assert {r.model for r in results[shown:]} == {"fake-left"}
    loader.gates["fake-right"].set()
    wait_for(qtbot, lambda: results[-1].model == "fake-right" and results[-1].fresh)
    assert window.capture is capture    # the source was not restarted
    indices = [r.frame.index for r in results if r.fresh]
    assert indices == sorted(indices) and indices[-1] > indices[0]
    overlay_checks(results[-1], figure_at(450, 250))


class SlowPipeline(FakePipeline):
    def __call__(self, frame):
        threading.Event().wait(0.25)
        return super().__call__(frame)


@pytest.mark.parametrize("realtime", [True, False])
def test_a_slow_model_drops_stale_frames_only_in_real_time(qtbot, make_window, realtime):
    loader = FakeLoader()
    loader.pipelines["fake-left"] = SlowPipeline(200, 200)
    window = make_window(loader=loader)
    window.realtime.setChecked(realtime)
    results = collect(window)
    window.open_source(CLIP)
    wait_for(qtbot, lambda: len([r for r in results if r.model == "fake-left"]) >= 4)
    indices = [r.frame.index for r in results if r.model == "fake-left"]
    gaps = np.diff(indices)
    # The clip runs at 10 fps, a frame takes 0.25 s: in real time the newest frame wins.
    assert (gaps >= 2).all() if realtime else (gaps == 1).all()


def write_clip(path, frames, size=(160, 120)):
    """A tiny MJPG clip whose frame i is a flat grey of 40 * i."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, size)
    for i in range(frames):
        writer.write(np.full((size[1], size[0], 3), 40 * i, np.uint8))
    writer.release()
    return str(path)


def test_loop_plays_a_file_past_its_end_until_loop_is_turned_off(qtbot, make_window, tmp_path):
    clip = write_clip(tmp_path / "five.avi", 5)
    window = make_window()
    window.realtime.setChecked(False)   # every frame, so the order is exact
    window.loop.setChecked(True)
    wait_for(qtbot, lambda: window.worker.model == "fake-left")   # its message would hide "end of video"
    results = collect(window)
    window.open_source(clip)
    capture = window.capture

    def fresh():
        return [r for r in results if r.fresh]

    wait_for(qtbot, lambda: len(fresh()) >= 12)
    shown = fresh()[:12]
    assert [r.frame.index for r in shown] == [0, 1, 2, 3, 4] * 2 + [0, 1]
    assert [r.frame.lap for r in shown] == [0] * 5 + [1] * 5 + [2] * 2
    assert [r.frame.time_s for r in shown[5:7]] == [0.0, 0.1]     # the clock starts over too
    assert np.array_equal(shown[5].frame.image, shown[0].frame.image)
    assert window.capture is capture and window.source_info.frame_count == 5
    window.loop.setChecked(False)       # plays to the end of the lap it is in, then stops
    wait_for(qtbot, lambda: window.statusBar().currentMessage() == "end of video")
    qtbot.wait(300)
    indices = [r.frame.index for r in fresh()]
    assert len(indices) % 5 == 0 and indices == [0, 1, 2, 3, 4] * (len(indices) // 5)
    window.close()
    assert window.settings.value("loop", type=bool) is False


def test_without_loop_a_file_stops_at_its_end(qtbot, make_window, tmp_path):
    clip = write_clip(tmp_path / "five.avi", 5)
    window = make_window()
    window.realtime.setChecked(False)
    wait_for(qtbot, lambda: window.worker.model == "fake-left")
    results = collect(window)
    window.open_source(clip)
    wait_for(qtbot, lambda: window.statusBar().currentMessage() == "end of video")
    qtbot.wait(300)
    assert [r.frame.index for r in results if r.fresh] == [0, 1, 2, 3, 4]


def test_pause_step_and_redraw_while_paused(qtbot, make_window):
    window = make_window()
    window.set_paused(True)
    results = collect(window)
    window.open_source(CLIP)
    wait_for(qtbot, lambda: window.worker.model == "fake-left" and window.source_info is not None)
    qtbot.wait(200)
    assert [r for r in results if r.fresh] == []     # paused from the start: nothing published
    window.step()
    wait_for(qtbot, lambda: any(r.fresh for r in results))
    window.step()
    wait_for(qtbot, lambda: len([r for r in results if r.fresh]) == 2)
    qtbot.wait(300)
    assert [r.frame.index for r in results if r.fresh] == [0, 1]
    # Drawing options redraw the paused frame without a new one.
    keypoints = figure_at(200, 200)
    window.threshold.setValue(95)   # above the fake keypoint scores: no keypoint drawn
    wait_for(qtbot, lambda: not results[-1].fresh and not changed_at(results[-1], keypoints).any())
    assert results[-1].frame.index == 1
    box_edge = np.array([[keypoints[:, 0].min(), 280]])    # left box side, away from any limb
    window.threshold.setValue(20)
    wait_for(qtbot, lambda: changed_at(results[-1], keypoints).all())
    assert not changed_at(results[-1], box_edge).any()
    window.draw_toggles["boxes"].setChecked(True)
    wait_for(qtbot, lambda: changed_at(results[-1], box_edge).all())
    assert results[-1].frame.index == 1 and not results[-1].fresh
    window.set_paused(False)
    wait_for(qtbot, lambda: results[-1].fresh and results[-1].frame.index > 2)


def test_record_save_frame_and_export_keypoints(qtbot, make_window, tmp_path):
    window = make_window()
    window.realtime.setChecked(False)
    results = collect(window)
    window.open_source(CLIP)
    wait_for(qtbot, lambda: any(r.model == "fake-left" for r in results))
    window.start_recording(str(tmp_path / "rec.mp4"))
    assert window.record_button.isChecked()
    start = len(results)
    wait_for(qtbot, lambda: len([r for r in results[start:] if r.fresh]) >= 30)
    window.stop_recording()
    assert not window.record_button.isChecked()
    written = int(re.match(r"saved (\d+) frames", window.statusBar().currentMessage()).group(1))
    # Results the worker emitted before the start arrive after it, queued in the event loop, and
    # were not recorded: 5-6 of the 30 on a loaded machine (24 once in CI), so the bound leaves room.
    assert written >= 20
    video = cv2.VideoCapture(str(tmp_path / "rec.mp4"))
    frames = 0
    while True:
        ok, frame = video.read()
        if not ok:
            break
        assert frame.shape == (480, 640, 3)
        frames += 1
    video.release()
    assert frames == written

    window.set_paused(True)
    window.save_frame(str(tmp_path / "frame.png"))
    saved = cv2.imread(str(tmp_path / "frame.png"))
    assert saved is not None and np.array_equal(saved, window.last_result.image)

    window.export_keypoints(str(tmp_path / "keypoints.json"))
    exported = read_keypoint_export(tmp_path / "keypoints.json")
    # A frame in flight when pausing may have been added after the export.
    with_person = [index for index, _, people in window.worker.records() if len(people)]
    assert [f.frame for f in exported] == with_person[:len(exported)] and len(exported) >= 30
    np.testing.assert_allclose(exported[-1].people.keypoints[0], figure_at(200, 200), atol=0.01)
    assert exported[-1].people.track_ids is not None


def test_a_still_image_is_rerun_when_the_model_changes(qtbot, make_window):
    window = make_window()
    results = collect(window)
    window.open_source(STILL)
    wait_for(qtbot, lambda: any(r.model == "fake-left" for r in results))
    window.select_model("fake-right")
    wait_for(qtbot, lambda: results[-1].model == "fake-right")
    assert results[-1].frame.index == 0 and not results[-1].fresh
    overlay_checks(results[-1], figure_at(450, 250))


class ZoomablePipeline(FakePipeline):
    """A bottom-up-like pipeline with a `zoom` attribute: with zoom on it finds its person
    elsewhere, so the overlay shows which way it ran."""

    def __init__(self):
        super().__init__(200, 200)
        self.zoom = None
        self.zooms_seen = []

    def __call__(self, frame):
        self.zooms_seen.append(self.zoom)
        self.keypoints = figure_at(450, 250) if self.zoom else figure_at(200, 200)
        return super().__call__(frame)


def test_zoom_reruns_a_still_image_with_the_zoom_pass_and_without_it(qtbot, make_window):
    loader = FakeLoader()
    loader.pipelines["fake-left"] = pipeline = ZoomablePipeline()
    window = make_window(loader=loader)
    results = collect(window)
    window.open_source(STILL)
    wait_for(qtbot, lambda: any(r.model == "fake-left" for r in results))
    overlay_checks(results[-1], figure_at(200, 200))
    window.zoom.setChecked(True)
    wait_for(qtbot, lambda: results[-1].zoom == 2.0)
    assert not results[-1].fresh and pipeline.zooms_seen[-1] == 2.0
    overlay_checks(results[-1], figure_at(450, 250))
    window.zoom.setChecked(False)
    wait_for(qtbot, lambda: results[-1].zoom is None)
    overlay_checks(results[-1], figure_at(200, 200))
    # a pipeline without the option (top-down) is not re-run for it
    window.select_model("fake-right")
    wait_for(qtbot, lambda: results[-1].model == "fake-right")
    count = len(results)
    window.zoom.setChecked(True)
    wait_for(qtbot, lambda: len(results) > count)
    assert results[-1].zoom is None and results[-1].people is results[-2].people


def test_user_errors_show_in_the_window(qtbot, make_window, tmp_path):
    window = make_window()
    wait_for(qtbot, lambda: window.worker.model == "fake-left")
    window.open_source(str(tmp_path / "missing.mp4"))
    wait_for(qtbot, lambda: window.error_box is not None)
    assert "not found" in window.error_box.text() and "missing.mp4" in window.error_box.text()

    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    window.open_source(str(tmp_path / "broken.mp4"))
    wait_for(qtbot, lambda: "broken.mp4" in window.error_box.text())

    window.open_source(9)   # no such camera
    wait_for(qtbot, lambda: "camera 9" in window.error_box.text())

    window.select_model("no-weights")
    wait_for(qtbot, lambda: "no trained weights" in window.error_box.text())
    assert window.model_box.currentData() == "fake-left" and window.worker.model == "fake-left"

    window.start_recording(str(tmp_path / "out.mp4"))   # nothing plays: refused, not crashed
    assert "nothing to record" in window.error_box.text() and not window.record_button.isChecked()

    # Still alive: a good file plays after all that.
    window.open_source(CLIP)
    wait_for(qtbot, lambda: window.last_result is not None and window.last_result.model == "fake-left")


def test_registry_models_without_weights_are_disabled_with_the_reason(qtbot, make_window, monkeypatch):
    spec = registry.MODELS[registry.DEFAULT_MODEL]
    monkeypatch.setattr(registry, "MODELS", {spec.name: spec})
    monkeypatch.setattr(registry, "WEIGHTS_DIR", registry.REPO_ROOT / "weights" / "absent-in-this-test")
    window = make_window(models=None)
    assert window.model_box.count() == 1 and window.model_box.itemData(0) == spec.name
    assert not window.model_box.model().item(0).isEnabled()
    assert window.model_box.itemData(0, Qt.ItemDataRole.ToolTipRole) == registry_choices()[0].status
    assert "missing" in registry_choices()[0].status
    assert window.model_box.currentIndex() == -1
    window.select_model(registry.DEFAULT_MODEL)   # forced anyway: the registry refuses it
    wait_for(qtbot, lambda: window.error_box is not None)
    assert "cannot run" in window.error_box.text() and window.worker.model is None
    window.open_source(CLIP)                        # the video still plays, without overlay
    wait_for(qtbot, lambda: window.last_result is not None)
    assert window.last_result.model is None
    assert np.array_equal(window.last_result.image, window.last_result.frame.image)


def test_settings_are_remembered_between_launches(qtbot, make_window):
    first = make_window()
    first.open_source(CLIP)
    first.select_model("fake-right")
    first.threshold.setValue(45)
    first.draw_toggles["boxes"].setChecked(True)
    first.loop.setChecked(True)
    first.zoom.setChecked(True)
    wait_for(qtbot, lambda: first.worker.model == "fake-right" and first.source_info is not None)
    first.close()

    second = make_window()
    assert second.threshold.value() == 45 and second.draw_toggles["boxes"].isChecked() and second.loop.isChecked()
    assert second.zoom.isChecked() and second.worker.options.zoom
    assert second.model_box.currentData() == "fake-right"
    wait_for(qtbot, lambda: second.source_info is not None and second.worker.model == "fake-right")
    assert second.source_info.source == CLIP


def test_dropping_a_file_opens_it(qtbot, make_window):
    window = make_window()
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(CLIP)])
    event = QDropEvent(QPointF(50, 50), Qt.DropAction.CopyAction, mime,
                       Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier)
    window.dropEvent(event)
    wait_for(qtbot, lambda: window.source_info is not None)
    assert window.source_info.source == CLIP


def test_the_view_keeps_the_aspect_ratio(qtbot, make_window):
    window = make_window()
    window.open_source(CLIP)
    wait_for(qtbot, lambda: window.view.image is not None)
    for size in ((900, 300), (400, 900)):
        window.view.resize(*size)
        rect = window.view.image_rect()
        assert rect.width() / rect.height() == pytest.approx(640 / 480)
        assert rect.width() <= size[0] + 1e-6 and rect.height() <= size[1] + 1e-6
        assert max(rect.width() - size[0], rect.height() - size[1]) == pytest.approx(0, abs=1e-6)


@pytest.mark.skipif(not registry.MODELS[registry.DEFAULT_MODEL].onnx_path.is_file(),
                    reason="weights/ldlc-openpose-t6.onnx not trained yet")
def test_the_real_model_delivers_results(qtbot, make_window):
    window = make_window(models=None)
    window.select_model(registry.DEFAULT_MODEL)
    results = collect(window)
    window.open_source(CLIP)
    wait_for(qtbot, lambda: any(r.model == registry.DEFAULT_MODEL and r.fresh for r in results), timeout=60000)
    result = next(r for r in results if r.model == registry.DEFAULT_MODEL and r.fresh)
    assert isinstance(result.people, People) and result.people.timings["network"] > 0


@pytest.mark.skipif(not registry.MODELS["mnv2-hwloss"].onnx_path.is_file(), reason="mnv2-hwloss not trained")
def test_zoom_is_offered_for_bottom_up_models_only(qtbot, make_window):
    window = make_window(models=None)
    window.select_model("mnv2-hwloss")
    # model_ready reaches the window after the worker swapped the model in
    wait_for(qtbot, lambda: window.worker.model == "mnv2-hwloss" and not window.zoom.isEnabled(), timeout=60000)
    window.select_model(registry.DEFAULT_MODEL)
    wait_for(qtbot, lambda: window.worker.model == registry.DEFAULT_MODEL and window.zoom.isEnabled(), timeout=60000)


def test_the_real_pipeline_runs_in_the_worker(qtbot, make_window, untrained_t6):
    """Mechanics only: the registry's pipeline on TEST-ONLY untrained weights (finds next to nobody)."""
    def load(name):
        return registry.load_pipeline(registry.DEFAULT_MODEL, weights=untrained_t6.onnx, threads=1)
    window = make_window(models=[ModelChoice(registry.DEFAULT_MODEL, "untrained", "ready")], loader=load)
    results = collect(window)
    window.open_source(CLIP)
    wait_for(qtbot, lambda: any(r.model == registry.DEFAULT_MODEL and r.fresh for r in results), timeout=60000)
    result = next(r for r in results if r.model == registry.DEFAULT_MODEL and r.fresh)
    assert isinstance(result.people, People) and result.people.timings["network"] > 0
    assert result.image.shape == (480, 640, 3)


class ListWriter:
    def __init__(self):
        self.frames = []

    def write(self, frame):
        self.frames.append(frame)


def test_a_recording_follows_the_source_clock():
    writer = ListWriter()
    recording = Recording(writer, fps=10)
    a, b, c, d = (np.full((2, 2, 3), v, np.uint8) for v in (1, 2, 3, 4))
    recording.write(a, 5.0)
    recording.write(b, 5.1)
    recording.write(c, 5.3)       # inference skipped 5.2: its place is filled by the next frame
    recording.write(d, 60.0)      # a paused camera: the gap is not filled
    recording.write(a, 0.0)       # a looping file back at its start: the recording goes on
    recording.write(b, 0.1)
    assert [int(f[0, 0, 0]) for f in writer.frames] == [1, 2, 3, 3, 4, 1, 2]
