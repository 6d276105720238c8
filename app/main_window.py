"""The desktop app: a camera or a file, a model dropdown, the skeleton overlay and live stats.

The UI thread only paints and reacts: sources open and play in a CaptureThread, models load
and run in the InferenceWorker (app/workers.py), which deliver results by queued signals.
"""
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from PyQt6.QtCore import QRectF, QSettings, Qt
from PyQt6.QtGui import QPainter
from PyQt6.QtWidgets import (QApplication, QCheckBox, QComboBox, QFileDialog, QLabel, QMainWindow,
                             QMessageBox, QPushButton, QSlider, QSpinBox, QToolBar, QWidget)

from pose_core import registry
from pose_core.errors import PoseError
from pose_core.keypoint_export import open_keypoint_writer
from pose_core.video import VIDEO_EXTENSIONS, safe_write_image

from .workers import IMAGE_SUFFIXES, CaptureThread, FrameSlot, InferenceWorker

ORGANIZATION, APPLICATION = "posekit", "posekit-app"
FPS_WINDOW_S = 2.0   # live FPS counts the results shown over this many seconds


@dataclass(frozen=True)
class ModelChoice:
    name: str
    label: str     # what the dropdown shows
    status: str    # 'ready', or why the model cannot run
    description: str = ""


def registry_choices(backend="onnx"):
    """One dropdown entry per registered pose model (not the person detectors), with its
    weights status."""
    return [ModelChoice(spec.name, f"{spec.name}  ({spec.kind}, {spec.input_height} px)",
                        registry.weights_status(spec, backend), spec.description)
            for spec in registry.pose_models().values()]


class VideoView(QWidget):
    """Paints the newest annotated frame, scaled to the widget with its aspect ratio kept."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.image = None
        self.setMinimumSize(320, 240)

    def set_image(self, image):
        self.image = image
        self.update()

    def image_rect(self):
        """Where the frame is drawn: centred, as large as fits."""
        if self.image is None:
            return QRectF()
        scale = min(self.width() / self.image.width(), self.height() / self.image.height())
        w, h = self.image.width() * scale, self.image.height() * scale
        return QRectF((self.width() - w) / 2, (self.height() - h) / 2, w, h)

    def paintEvent(self, event):
        painter = QPainter(self)
        painter.fillRect(self.rect(), Qt.GlobalColor.black)
        if self.image is None:
            painter.setPen(Qt.GlobalColor.lightGray)
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter,
                             "Open a camera or a video/image file, or drop a file here")
            return
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        painter.drawImage(self.image_rect(), self.image)


class MainWindow(QMainWindow):
    """`models` (ModelChoice list) and `load_pipeline` (name -> pipeline) default to the
    registry; tests replace them to run fixed fake pipelines."""

    def __init__(self, settings=None, models=None, load_pipeline=registry.load_pipeline):
        super().__init__()
        self.settings = settings or QSettings(ORGANIZATION, APPLICATION)
        self.models = registry_choices() if models is None else models
        self.slot = FrameSlot()
        self.worker = InferenceWorker(self.slot, load_pipeline)
        self.capture = None
        self.source_id = 0
        self.source_info = None
        self.last_result = None
        self.error_box = None
        self._shown_at = deque()
        self.setWindowTitle("posekit")
        self.setAcceptDrops(True)
        self.view = VideoView()
        self.setCentralWidget(self.view)
        self._build_source_bar()
        self._build_view_bar()
        self.stats = QLabel("no source")
        self.statusBar().addPermanentWidget(self.stats)
        self.worker.result_ready.connect(self._on_result)
        self.worker.model_ready.connect(self._on_model_ready)
        self.worker.model_failed.connect(self._on_model_failed)
        self.worker.failed.connect(self.show_error)
        self.worker.start()
        self._restore_settings()
        self.resize(1000, 720)

    # ------------------------------------------------------------ layout

    def _build_source_bar(self):
        bar = QToolBar("Source")
        self.addToolBar(bar)
        self.camera_index = QSpinBox()
        self.camera_index.setRange(0, 9)
        self.camera_index.setToolTip("camera index")
        camera = QPushButton("Camera")
        camera.clicked.connect(lambda: self.open_source(self.camera_index.value()))
        open_file = QPushButton("Open file…")
        open_file.clicked.connect(self._choose_file)
        self.model_box = QComboBox()
        self.model_box.setPlaceholderText("no model")
        for i, choice in enumerate(self.models):
            self.model_box.addItem(choice.label, choice.name)
            ready = choice.status == "ready"
            self.model_box.setItemData(i, choice.description if ready else choice.status,
                                       Qt.ItemDataRole.ToolTipRole)
            if not ready:
                self.model_box.model().item(i).setEnabled(False)
        self.model_box.currentIndexChanged.connect(self._on_model_chosen)
        self.pause_button = QPushButton("Pause")
        self.pause_button.setCheckable(True)
        self.pause_button.setShortcut("Space")
        self.pause_button.toggled.connect(self.set_paused)
        self.step_button = QPushButton("Step")
        self.step_button.setShortcut("Right")
        self.step_button.setToolTip("next frame while paused (→)")
        self.step_button.clicked.connect(self.step)
        self.realtime = QCheckBox("Real time")
        self.realtime.setToolTip("on: a file plays at its own rate, frames the model misses are dropped;\n"
                                 "off: every frame is processed, as fast as the model goes")
        self.realtime.toggled.connect(self._on_realtime)
        self.loop = QCheckBox("Loop")
        self.loop.setToolTip("a file starts over from its first frame at its end")
        self.loop.toggled.connect(self._on_loop)
        self.zoom = QCheckBox("Zoom")
        self.zoom.setToolTip("bottom-up models: run the network again, at twice the scale, around the small\n"
                             "people it found: more accurate on small people, slower the more there are")
        self.zoom.toggled.connect(lambda on: self.worker.set_options(zoom=on))
        for widget in (self.camera_index, camera, open_file):
            bar.addWidget(widget)
        bar.addSeparator()
        bar.addWidget(QLabel("Model "))
        bar.addWidget(self.model_box)
        bar.addWidget(self.zoom)
        bar.addSeparator()
        for widget in (self.pause_button, self.step_button, self.realtime, self.loop):
            bar.addWidget(widget)

    def _build_view_bar(self):
        bar = QToolBar("View")
        self.addToolBarBreak()
        self.addToolBar(bar)
        self.threshold = QSlider(Qt.Orientation.Horizontal)
        self.threshold.setRange(0, 100)
        self.threshold.setFixedWidth(140)
        self.threshold_label = QLabel()
        self.threshold.valueChanged.connect(self._on_threshold)
        bar.addWidget(QLabel("Score ≥ "))
        bar.addWidget(self.threshold)
        bar.addWidget(self.threshold_label)
        bar.addSeparator()
        self.draw_toggles = {}
        for key, text in (("keypoints", "Keypoints"), ("limbs", "Limbs"), ("boxes", "Boxes"),
                          ("track", "Track ids"), ("smooth", "Smooth")):
            box = QCheckBox(text)
            box.toggled.connect(lambda on, key=key: self._on_draw_toggle(key, on))
            self.draw_toggles[key] = box
            bar.addWidget(box)
        self.draw_toggles["smooth"].setToolTip("One Euro filter on the keypoints of tracked people")
        bar.addSeparator()
        self.record_button = QPushButton("Record")
        self.record_button.setCheckable(True)
        self.record_button.toggled.connect(self._on_record_toggled)
        save_frame = QPushButton("Save frame…")
        save_frame.clicked.connect(self._choose_frame_file)
        export = QPushButton("Export keypoints…")
        export.clicked.connect(self._choose_export_file)
        for widget in (self.record_button, save_frame, export):
            bar.addWidget(widget)

    # ------------------------------------------------------------ settings

    def _restore_settings(self):
        s = self.settings
        self.threshold.setValue(round(100 * s.value("threshold", self.worker.options.min_score, type=float)))
        self._on_threshold(self.threshold.value())
        for key, box in self.draw_toggles.items():
            box.setChecked(s.value(f"draw/{key}", getattr(self.worker.options, key), type=bool))
        self.realtime.setChecked(s.value("realtime", True, type=bool))
        self.loop.setChecked(s.value("loop", False, type=bool))
        self.zoom.setChecked(s.value("zoom", False, type=bool))
        ready = [c.name for c in self.models if c.status == "ready"]
        model = s.value("model", "", type=str)
        if model not in ready:  # first launch: the registry's default, else any model with weights
            model = registry.DEFAULT_MODEL if registry.DEFAULT_MODEL in ready else (ready[0] if ready else None)
        if model is None:
            self.statusBar().showMessage("no model has trained weights: showing the video only")
        else:
            self.select_model(model)
        source = s.value("source", "", type=str)
        if source.startswith("camera:"):
            self.camera_index.setValue(int(source.split(":", 1)[1]))
            self.open_source(self.camera_index.value())
        elif source:
            if Path(source).is_file():
                self.open_source(source)
            else:
                self.statusBar().showMessage(f"last file is gone: {source}")

    def _save_settings(self):
        s = self.settings
        s.setValue("threshold", self.threshold.value() / 100)
        s.setValue("realtime", self.realtime.isChecked())
        s.setValue("loop", self.loop.isChecked())
        s.setValue("zoom", self.zoom.isChecked())
        for key, box in self.draw_toggles.items():
            s.setValue(f"draw/{key}", box.isChecked())
        if self.worker.model:
            s.setValue("model", self.worker.model)
        if self.source_info is not None:
            source = self.source_info.source
            s.setValue("source", f"camera:{source}" if isinstance(source, int) else source)
        s.sync()

    # ------------------------------------------------------------ sources

    def open_source(self, source):
        """Play camera index `source` (int) or a video/image file path instead of the current source."""
        source = source if isinstance(source, int) else str(source)
        self.stop_recording()
        if self.capture is not None:
            self._retire(self.capture)
        self.source_id += 1
        self.source_info = self.last_result = None
        self.worker.new_source(self.source_id)
        self._shown_at.clear()
        self.view.set_image(None)
        self.stats.setText("no source")
        self.capture = CaptureThread(source, self.slot, self.source_id, self.realtime.isChecked(),
                                     self.pause_button.isChecked(), self.loop.isChecked())
        self.capture.opened.connect(self._on_opened)
        self.capture.failed.connect(self.show_error)
        self.capture.ended.connect(self._on_ended)
        self.capture.start()
        self.statusBar().showMessage(f"opening {source if isinstance(source, str) else f'camera {source}'}…")

    def _retire(self, capture):
        # Its late signals belong to a source the user has left.
        for signal in (capture.opened, capture.failed, capture.ended):
            signal.disconnect()
        capture.stop()

    def _on_opened(self, info):
        self.source_info = info
        self.setWindowTitle(f"posekit: {info.label}")
        rate = "" if info.still else f", {info.fps:.3g} fps"
        self.statusBar().showMessage(f"playing {info.label} ({info.size[0]}x{info.size[1]}{rate})", 5000)
        self._save_settings()

    def _on_ended(self):
        self.statusBar().showMessage("end of video")

    def set_paused(self, paused):
        if self.pause_button.isChecked() != paused:
            self.pause_button.setChecked(paused)  # comes back here through `toggled`
            return
        self.pause_button.setText("Play" if paused else "Pause")
        if self.capture is not None:
            self.capture.set_paused(paused)

    def step(self):
        """Show the next frame, pausing first when playing."""
        self.set_paused(True)
        if self.capture is not None:
            self.capture.step()

    def _on_realtime(self, on):
        if self.capture is not None:
            self.capture.set_realtime(on)

    def _on_loop(self, on):
        if self.capture is not None:
            self.capture.loop = on

    def _choose_file(self):
        patterns = " ".join(f"*{ext}" for ext in (*VIDEO_EXTENSIONS, *sorted(IMAGE_SUFFIXES)))
        path, _ = QFileDialog.getOpenFileName(self, "Open a video or an image", "",
                                              f"Videos and images ({patterns});;All files (*)")
        if path:
            self.open_source(path)

    def dragEnterEvent(self, event):
        if any(url.isLocalFile() for url in event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event):
        files = [url.toLocalFile() for url in event.mimeData().urls() if url.isLocalFile()]
        if files:
            event.acceptProposedAction()
            self.open_source(files[0])

    # ------------------------------------------------------------ models and drawing

    def select_model(self, name):
        """Switch to model `name`; it loads in the background and the source keeps playing."""
        index = self.model_box.findData(name)
        if index < 0:
            self.show_error(f"unknown model '{name}'")
        elif index == self.model_box.currentIndex():
            self._on_model_chosen(index)
        else:
            self.model_box.setCurrentIndex(index)

    def _on_model_chosen(self, index):
        if index < 0:
            return
        name = self.model_box.itemData(index)
        self.worker.set_model(name)
        self.statusBar().showMessage(f"loading model {name}…")

    def _on_model_ready(self, name):
        self.statusBar().showMessage(f"model {name} ready", 3000)
        # Only bottom-up pipelines have the zoom pass (models outside the registry are tests' fakes).
        spec = registry.MODELS.get(name)
        self.zoom.setEnabled(spec is None or spec.kind == "bottom-up")
        self._save_settings()

    def _on_model_failed(self, name, message):
        # Put the dropdown back on the model that still runs.
        self.model_box.blockSignals(True)
        self.model_box.setCurrentIndex(self.model_box.findData(self.worker.model) if self.worker.model else -1)
        self.model_box.blockSignals(False)
        self.show_error(message)

    def _on_threshold(self, value):
        self.threshold_label.setText(f"{value / 100:.2f}")
        self.worker.set_options(min_score=value / 100)

    def _on_draw_toggle(self, key, on):
        self.worker.set_options(**{key: on})

    # ------------------------------------------------------------ results

    def _on_result(self, result):
        if result.frame.source_id != self.source_id:
            return
        self.last_result = result
        self.view.set_image(result.qimage)
        if not result.fresh:
            return
        now = time.perf_counter()
        self._shown_at.append(now)
        while now - self._shown_at[0] > FPS_WINDOW_S:
            self._shown_at.popleft()
        span = now - self._shown_at[0]
        fps = f"{(len(self._shown_at) - 1) / span:.1f} fps" if span > 0 else "- fps"
        network = result.people.timings.get("network")
        parts = [fps, f"latency {1000 * (now - result.frame.captured_at):.0f} ms", f"{len(result.people)} people",
                 f"network {1000 * network:.0f} ms" if network is not None else "network -",
                 result.model or "no model", f"frame {result.frame.index}"]
        self.stats.setText("  |  ".join(parts))

    # ------------------------------------------------------------ outputs

    def start_recording(self, path):
        """Write the annotated stream to `path` (.mp4/.avi) until stop_recording()."""
        if self.last_result is None or self.source_info is None:
            self._set_record_button(False)
            self.show_error("nothing to record yet: open a camera or a file first")
            return
        height, width = self.last_result.image.shape[:2]
        try:
            self.worker.start_recording(path, self.source_info.fps or 1.0, (width, height))
        except PoseError as e:
            self._set_record_button(False)
            self.show_error(str(e))
            return
        self._set_record_button(True)
        self.statusBar().showMessage(f"recording to {path}")

    def stop_recording(self):
        self._set_record_button(False)
        try:
            writer = self.worker.stop_recording()
        except PoseError as e:
            self.show_error(str(e))
            return
        if writer is not None:
            self.statusBar().showMessage(f"saved {writer.frames} frames to {writer.path}")

    def _set_record_button(self, on):
        self.record_button.blockSignals(True)
        self.record_button.setChecked(on)
        self.record_button.setText("Stop recording" if on else "Record")
        self.record_button.blockSignals(False)

    def _on_record_toggled(self, on):
        if not on:
            self.stop_recording()
            return
        path, _ = QFileDialog.getSaveFileName(self, "Record the annotated video", "recording.mp4",
                                              "Video (*.mp4 *.avi)")
        if path:
            self.start_recording(path)
        else:
            self._set_record_button(False)

    def save_frame(self, path):
        """Save the annotated frame on screen as an image."""
        if self.last_result is None:
            self.show_error("no frame to save yet")
            return
        try:
            safe_write_image(path, self.last_result.image)
        except PoseError as e:
            self.show_error(str(e))
            return
        self.statusBar().showMessage(f"saved frame to {path}", 5000)

    def _choose_frame_file(self):
        path, _ = QFileDialog.getSaveFileName(self, "Save the frame", "frame.png", "Images (*.png *.jpg)")
        if path:
            self.save_frame(path)

    def export_keypoints(self, path):
        """Write the keypoints of every frame shown from the current source (JSON or CSV)."""
        if self.source_info is None:
            self.show_error("nothing to export yet: open a camera or a file first")
            return
        records = self.worker.records()
        try:
            writer = open_keypoint_writer(path, {**self.source_info.as_dict(), "model": self.worker.model})
            with writer:
                for index, time_s, people in records:
                    writer.write(index, time_s, people)
        except PoseError as e:
            self.show_error(str(e))
            return
        self.statusBar().showMessage(f"exported keypoints of {len(records)} frames to {path}", 5000)

    def _choose_export_file(self):
        path, _ = QFileDialog.getSaveFileName(self, "Export keypoints", "keypoints.json",
                                              "Keypoints (*.json *.csv)")
        if path:
            self.export_keypoints(path)

    # ------------------------------------------------------------ errors and shutdown

    def show_error(self, message):
        """The message in the status bar and in a box that does not block the video."""
        self.statusBar().showMessage(message)
        if self.error_box is not None:
            self.error_box.close()
        self.error_box = QMessageBox(QMessageBox.Icon.Warning, "posekit", message,
                                     QMessageBox.StandardButton.Ok, self)
        self.error_box.open()

    def closeEvent(self, event):
        self._save_settings()
        self.stop_recording()
        capture, self.capture = self.capture, None
        if capture is not None:
            self._retire(capture)
        self.worker.stop()
        if capture is not None:
            capture.join(2.0)
        super().closeEvent(event)


def run_app(argv=None):
    """Start the app; returns its exit code."""
    app = QApplication.instance() or QApplication(sys.argv if argv is None else argv)
    app.setOrganizationName(ORGANIZATION)
    app.setApplicationName(APPLICATION)
    window = MainWindow()
    window.show()
    return app.exec()
