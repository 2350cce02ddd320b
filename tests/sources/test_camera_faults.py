"""Camera faults: garbage frames, corrupt JPEGs, a stream that stalls or disappears, a file that ends.

The daemon stays up, says what is wrong in its status, and reconnects with backoff.
"""

from __future__ import annotations

import http.server
import json
import threading
import time

import cv2
import numpy as np
import pytest
from conftest import backbone_settings, toml_config, wait_until, write_config, write_video

from edged.config import SourceConfig
from edged.errors import SourceError
from edged.sources import FrameGrabber, open_source
from edged.sources.base import Frame, Source
from edged.sources.preprocess import to_pixels
from edged.sources.synthetic import scene_at


class ScriptedCamera(Source):
    """A live source playing a script: frames of any kind, 'lost' (read raises), then good frames after reopen."""

    live = True
    description = "scripted camera"

    def __init__(self, script):
        self.script = list(script)
        self.opens = 0

    def open(self):
        self.opens += 1

    def read(self):
        time.sleep(0.005)
        item = self.script.pop(0) if self.script else np.full((48, 64, 3), 100, np.uint8)
        if isinstance(item, str) and item == "lost":
            raise SourceError("scripted camera lost")
        return Frame(item, self.opens)


def test_garbage_frames_are_skipped_and_counted_and_a_lost_camera_comes_back():
    good = np.full((48, 64, 3), 50, np.uint8)
    unusable = [np.zeros((0, 0, 3), np.uint8), np.zeros((48, 64, 5), np.uint8), np.zeros((1, 1, 3), np.uint8),
                "not a frame", np.array([["a"]])]
    convertible = [np.full((48, 64), 7, np.uint8), np.zeros((48, 64, 4), np.uint8),
                   np.full((48, 64, 3), np.nan, np.float32), np.full((48, 64, 3), 300.0)]
    camera = ScriptedCamera([good] + unusable + convertible + ["lost"])
    cfg = SourceConfig(reconnect_min_s=0.1, reconnect_max_s=0.2, stall_after_s=5)
    stop = threading.Event()
    grabber = FrameGrabber(camera, cfg, stop, lambda img: to_pixels(img, 32), queue_size=100)
    grabber.start()
    try:
        wait_until(lambda: camera.opens >= 2 and grabber.captured > 10, what=lambda: (grabber.state, grabber.error))
        assert grabber.bad_frames == len(unusable)
        assert grabber.reconnects >= 0 and grabber.state == "ok" and grabber.health == "ok"
        frames = [grabber.frames.get_nowait() for _ in range(grabber.frames.qsize())]
        assert all(f.image.dtype == np.uint8 and f.image.shape[2] == 3 and f.pixels.shape == (32, 32, 3) for f in frames)
        assert sum(1 for f in frames if f.pos == 1) == 1 + len(convertible)  # before the loss: good + converted
    finally:
        stop.set()
        grabber.join()


class FaultyMjpegServer:
    """An MJPEG camera on loopback that can send corrupt JPEGs, stall (connection open, nothing sent) and resume."""

    def __init__(self, frames):
        self.jpegs = [cv2.imencode(".jpg", f)[1].tobytes() for f in frames]
        self.corrupt_every = 0
        self.stalled = threading.Event()
        self.sent = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                try:
                    while True:
                        if outer.stalled.is_set():
                            time.sleep(0.05)
                            continue
                        data = outer.jpegs[outer.sent % len(outer.jpegs)]
                        if outer.corrupt_every and outer.sent % outer.corrupt_every == 0:
                            data = data[:20] + bytes(np.random.default_rng(outer.sent).integers(0, 256, 400, np.uint8))
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                         + str(len(data)).encode() + b"\r\n\r\n" + data + b"\r\n")
                        outer.sent += 1
                        time.sleep(0.03)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/stream.mjpg"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _frames(n):
    return [scene_at(0, i, 160, 120, clutter=4).image for i in range(n)]


@pytest.mark.heavy
def test_corrupt_jpegs_and_a_stalled_stream_over_http():
    server = FaultyMjpegServer(_frames(6))
    cfg = SourceConfig(uri=server.url, reconnect_min_s=0.2, reconnect_max_s=0.5, read_timeout_s=2.0, stall_after_s=0.8)
    stop = threading.Event()
    grabber = FrameGrabber(open_source(cfg), cfg, stop, lambda img: to_pixels(img, 32), 2)
    grabber.start()
    try:
        wait_until(lambda: grabber.captured >= 5, what=lambda: grabber.error)
        server.corrupt_every = 3  # every third JPEG is garbage after its header
        before = grabber.captured
        # frames keep coming past the bad ones (FFmpeg skips them, or the read fails and the stream is reopened)
        wait_until(lambda: grabber.captured > before + 20, 20, what=lambda: (grabber.state, grabber.error))
        server.corrupt_every = 0
        wait_until(lambda: grabber.state == "ok", 10)
        server.stalled.set()
        wait_until(lambda: grabber.health == "stalled", 5, what=lambda: grabber.health)
        stalled_at = time.monotonic()
        wait_until(lambda: grabber.state == "camera_lost", 10, what=lambda: grabber.state)  # the read timeout ends the stall
        lost_after = time.monotonic() - stalled_at
        server.stalled.clear()
        before = grabber.captured
        wait_until(lambda: grabber.state == "ok" and grabber.captured > before + 5, 20, what=lambda: grabber.error)
        assert grabber.health == "ok" and grabber.reconnects >= 1
        print(f"stalled -> camera_lost after {lost_after:.1f} s (read_timeout_s 2)")
    finally:
        stop.set()
        grabber.join()
        server.close()


@pytest.mark.heavy
def test_daemon_reports_a_stalled_then_lost_camera_and_a_file_that_ended(broker, probe, daemons, make_state, tmp_path):
    server = FaultyMjpegServer(_frames(6))
    backbone = backbone_settings("none", input_size=96)
    state = make_state(backbone)
    text = toml_config(state, broker.port, server.url, backbone, "cam-faults").replace(
        "fps = 60", "fps = 60\nread_timeout_s = 2.0\nstall_after_s = 1.0\nreconnect_min_s = 0.2\nreconnect_max_s = 0.5")
    d = daemons(write_config(tmp_path / "s.toml", text), tmp_path / "s.log")
    try:
        probe.wait_online("cam-faults")
        states = []

        def saw(state):
            def match(t, p, r):
                if t == "edged/cam-faults/status":
                    states.append(json.loads(p)["source"]["state"])
                return states and states[-1] == state
            return match

        probe.wait_for(saw("ok"), 30)
        server.stalled.set()
        probe.wait_for(saw("stalled"), 15)
        probe.wait_for(saw("camera_lost"), 15)
        server.stalled.clear()
        probe.wait_for(saw("ok"), 30)
        assert d.alive()
        assert probe.request("cam-faults", "status", {})["ok"]
        assert d.stop() == 0
    finally:
        server.close()

    video = write_video(tmp_path / "short.mp4", _frames(5))
    text = toml_config(state, broker.port, video, backbone, "cam-eof").replace("loop = true", "loop = false")
    d = daemons(write_config(tmp_path / "f.toml", text), tmp_path / "f.log")
    probe.wait_for(lambda t, p, r: t == "edged/cam-eof/status" and json.loads(p)["source"]["state"] == "ended", 60)
    assert d.alive(), d.output()  # the daemon stays up (commands still work) after its file ended
    assert probe.request("cam-eof", "status", {})["result"]["source"]["state"] == "ended"
    assert d.stop() == 0
