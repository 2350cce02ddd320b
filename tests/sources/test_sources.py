"""Frame sources against real decoding: video files, image folders, an MJPEG HTTP camera that drops out."""

from __future__ import annotations

import base64
import functools
import http.server
import textwrap
import threading
import time

import cv2
import numpy as np
import pytest
from conftest import wait_until, write_video

from edged import source_kinds
from edged.config import Config, SourceConfig
from edged.errors import SourceError
from edged.sources import FrameGrabber, open_source
from edged.sources.folder import FolderSource
from edged.sources.opencv import OpenCVSource
from edged.sources.jpeg import jpeg_size
from edged.sources.preprocess import to_pixels
from edged.sources.synthetic import SyntheticSource, make_scene, scene_at


def _frames(n, w=96, h=64):
    out = []
    for i in range(n):
        img = np.full((h, w, 3), (i * 20) % 256, np.uint8)
        cv2.putText(img, str(i), (5, h - 10), cv2.FONT_HERSHEY_SIMPLEX, 1.2, (255, 255, 255), 2)
        out.append(img)
    return out


def test_video_file_decodes_loops_and_stops(tmp_path):
    frames = _frames(6)
    path = write_video(tmp_path / "v.mp4", frames)
    src = OpenCVSource(path, SourceConfig(uri=path, loop=False))
    src.open()
    got = []
    while (f := src.read()) is not None:
        got.append(f)
    src.close()
    assert [f.pos for f in got] == list(range(6))
    # real decoding: the decoded frame is close to what was written (lossy codec)
    assert np.abs(got[3].image.astype(int) - frames[3].astype(int)).mean() < 12
    assert src.fps == pytest.approx(25.0)
    looping = OpenCVSource(path, SourceConfig(uri=path, loop=True))
    looping.open()
    positions = [looping.read().pos for _ in range(14)]
    looping.close()
    assert positions == list(range(6)) * 2 + [0, 1]


def test_missing_file_and_bad_folder(tmp_path):
    with pytest.raises(SourceError, match="not found"):
        OpenCVSource(str(tmp_path / "none.mp4"), SourceConfig()).open()
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no images"):
        FolderSource(str(tmp_path / "empty"), SourceConfig()).open()


def test_folder_source_sorted_and_skips_unreadable(tmp_path):
    for i, img in enumerate(_frames(3)):
        cv2.imwrite(str(tmp_path / f"{i}.png"), img)
    (tmp_path / "1b.jpg").write_bytes(b"not an image")
    src = open_source(SourceConfig(uri=str(tmp_path), loop=False))
    assert isinstance(src, FolderSource)
    src.open()
    got = []
    while (f := src.read()) is not None:
        got.append(f.pos)
    assert got == [0, 1, 3]  # 1b.jpg (position 2) skipped


def test_folder_decodes_large_jpegs_reduced_but_never_below_the_capture_size(tmp_path):
    scene = scene_at(0, 0, 2560, 1920).image
    cv2.imwrite(str(tmp_path / "a_large.jpg"), scene)
    cv2.imwrite(str(tmp_path / "b_portrait.jpg"), cv2.resize(scene, (1080, 1440)), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    cv2.imwrite(str(tmp_path / "c_small.jpg"), cv2.resize(scene, (1000, 750)))
    cv2.imwrite(str(tmp_path / "d_large.png"), cv2.resize(scene, (1280, 960)))

    def shapes(**options):
        src = open_source(SourceConfig(uri=str(tmp_path), loop=False, **options))
        src.open()
        out = []
        while (f := src.read()) is not None:
            out.append(f.image.shape[:2])
        return out

    # 2560x1920 -> 1/4 = 640x480; 1080x1440 portrait (progressive) -> 1/2; 1000x750 cannot halve; PNGs decode whole
    assert shapes() == [(480, 640), (720, 540), (750, 1000), (960, 1280)]
    assert shapes(width=320, height=240) == [(240, 320), (360, 270), (375, 500), (960, 1280)]
    assert shapes(reduced_decoding=False) == [(1920, 2560), (1440, 1080), (750, 1000), (960, 1280)]
    src = open_source(SourceConfig(uri=str(tmp_path)))
    src.open()
    expected = cv2.resize(scene, (640, 480), interpolation=cv2.INTER_AREA).astype(np.float32)
    assert np.abs(src.read().image - expected).mean() < 8  # the same picture, not a crop of it
    assert jpeg_size((tmp_path / "a_large.jpg").read_bytes()) == (2560, 1920)
    assert jpeg_size(b"not a jpeg") is None and jpeg_size((tmp_path / "a_large.jpg").read_bytes()[:4]) is None


def test_synthetic_scene_has_shape_in_box():
    rng = np.random.default_rng(3)
    for _ in range(20):
        scene = make_scene(rng, 128, 96, clutter=0)
        x1, y1, x2, y2 = scene.box
        h, w = scene.image.shape[:2]
        inside = scene.image[int(y1 * h):int(y2 * h), int(x1 * w):int(x2 * w)]
        outside = scene.image.copy()
        outside[int(y1 * h):int(y2 * h), int(x1 * w):int(x2 * w)] = 0
        assert inside.any() and not outside.any()
        filled = (inside.sum(axis=2) > 0).mean()
        assert (filled > 0.95) if scene.label == "rectangle" else (0.3 < filled < 0.7)
    a, b = scene_at(1, 5, 64, 64), scene_at(1, 5, 64, 64)
    assert np.array_equal(a.image, b.image) and a.label == b.label


def test_synthetic_source_options():
    src = SyntheticSource("synthetic:shape=rectangle,frames=3", SourceConfig(loop=False, width=64, height=48))
    src.open()
    frames = [src.read() for _ in range(4)]
    assert frames[-1] is None and frames[0].image.shape == (48, 64, 3)
    with pytest.raises(SourceError, match="unknown option"):
        SyntheticSource("synthetic:colour=red", SourceConfig())


def test_preprocess_centre_crops_and_converts_to_rgb():
    img = np.zeros((100, 200, 3), np.uint8)
    img[:, :50] = (255, 0, 0)  # blue (BGR) band outside the centre crop
    img[:, 50:150] = (0, 0, 255)  # red in the centre
    px = to_pixels(img, 32)
    assert px.shape == (32, 32, 3)
    assert (px[..., 0] == 255).all() and (px[..., 2] == 0).all()


class _MjpegServer:
    """A tiny multipart/x-mixed-replace JPEG camera on loopback; `cut()` drops it."""

    def __init__(self, frames, port: int = 0, lengths: bool = True, basic_auth: str = ""):
        jpegs = [cv2.imencode(".jpg", f)[1].tobytes() for f in frames]
        self.alive = threading.Event()
        self.alive.set()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                expected = "Basic " + base64.b64encode(basic_auth.encode()).decode()
                if basic_auth and self.headers.get("Authorization") != expected:
                    self.send_error(401)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                i = 0
                try:
                    while outer.alive.is_set():
                        data = jpegs[i % len(jpegs)]
                        length = b"Content-Length: " + str(len(data)).encode() + b"\r\n" if lengths else b""
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n" + length + b"\r\n" + data
                                         + b"\r\n")
                        i += 1
                        time.sleep(0.03)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/stream.mjpg"

    def cut(self):
        self.alive.clear()
        self.httpd.shutdown()
        self.httpd.server_close()


def test_mjpeg_camera_decodes_reduced_with_or_without_part_lengths_and_sends_credentials():
    large = [scene_at(0, i, 1280, 960, clutter=4).image for i in range(3)]
    for lengths in (True, False):
        server = _MjpegServer(large, lengths=lengths, basic_auth="cam:s3cr:et")
        try:
            cfg = SourceConfig(uri=server.url.replace("http://", "http://cam:s3cr%3Aet@"))
            src = open_source(cfg)
            src.open()
            frames = [src.read().image for _ in range(4)]
            src.close()
            assert [f.shape for f in frames] == [(480, 640, 3)] * 4
            expected = cv2.resize(large[0], (640, 480), interpolation=cv2.INTER_AREA).astype(np.float32)
            assert np.abs(frames[0] - expected).mean() < 8
            whole = open_source(cfg.model_copy(update={"reduced_decoding": False}))
            whole.open()
            assert whole.read().image.shape == (960, 1280, 3)
            whole.close()
            with pytest.raises(SourceError, match="cannot open .*401"):
                open_source(SourceConfig(uri=server.url)).open()
        finally:
            server.cut()


def test_http_stream_that_is_not_mjpeg_goes_to_ffmpeg(tmp_path):
    write_video(tmp_path / "clip.mp4", _frames(5, 160, 120))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        src = open_source(SourceConfig(uri=f"http://127.0.0.1:{httpd.server_address[1]}/clip.mp4"))
        src.open()
        assert isinstance(src._other, OpenCVSource)  # not MJPEG: handed to OpenCV's FFmpeg backend
        assert src.read().image.shape == (120, 160, 3)
        src.close()
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_http_camera_lost_then_reconnects():
    frames = _frames(5, 160, 120)
    server = _MjpegServer(frames)
    cfg = SourceConfig(uri=server.url, reconnect_min_s=0.2, reconnect_max_s=0.5)
    stop = threading.Event()
    grabber = FrameGrabber(open_source(cfg), cfg, stop, lambda img: to_pixels(img, 32), 2)
    grabber.start()
    try:
        wait_until(lambda: grabber.captured >= 5, what=lambda: grabber.error)
        assert grabber.state == "ok"
        port = server.port
        server.cut()
        wait_until(lambda: grabber.state == "camera_lost", what=lambda: grabber.state)
        assert "lost" in grabber.error or "cannot open" in grabber.error
        before = grabber.captured
        server2 = _MjpegServer(frames, port)  # the camera comes back on the same port
        wait_until(lambda: grabber.state == "ok" and grabber.captured > before + 3, 30, what=lambda: grabber.error)
        assert grabber.reconnects >= 1
        server2.cut()
    finally:
        stop.set()
        grabber.join()


def test_grabber_drops_stale_frames_and_counts_them():
    cfg = SourceConfig(uri="synthetic:clutter=0", realtime=True, fps=1000, width=32, height=32)
    stop = threading.Event()
    grabber = FrameGrabber(open_source(cfg), cfg, stop, lambda img: img, queue_size=2)
    grabber.start()
    try:
        wait_until(lambda: grabber.dropped > 10)
        newest_first = grabber.get(1).pos
        assert newest_first > 10  # the consumer sees recent frames, not the first ones
    finally:
        stop.set()
        grabber.join()


def test_unpaced_file_waits_for_the_consumer_instead_of_dropping():
    cfg = SourceConfig(uri="synthetic:clutter=0", realtime=False, width=32, height=32)
    stop = threading.Event()
    grabber = FrameGrabber(open_source(cfg), cfg, stop, lambda img: img, queue_size=2)
    grabber.start()
    try:
        wait_until(lambda: grabber.captured >= 2, what="the queue filling")  # then the grabber waits on it
        assert grabber.dropped == 0 and grabber.captured <= 3
        assert [grabber.get(1).pos for _ in range(5)] == [0, 1, 2, 3, 4]  # nothing skipped while it waited
    finally:
        stop.set()
        grabber.join()


THERMAL = textwrap.dedent('''
    import numpy as np
    from edged.source_kinds import SourceKind
    from edged.sources.base import Frame, Source

    class ThermalSource(Source):
        live = False
        description = "thermal camera"

        def __init__(self, uri, cfg):
            self.uri, self.cfg, self.n = uri, cfg, 0

        def read(self):
            self.n += 1
            return Frame(np.full((24, 32, 3), 30 + self.n, np.uint8), self.n) if self.n <= 3 else None

    KIND = SourceKind("thermal", lambda uri: uri.startswith("thermal:"), "thermal_source:ThermalSource")
    WHISTLE = SourceKind("whistle", lambda uri: uri.startswith("whistle:"), "thermal_source:ThermalSource", hears=True)
''')


def test_a_new_kind_of_source_is_one_module_and_its_registration(tmp_path, monkeypatch):
    """Issue 36, 3: a kind of source from another package is its module plus an entry point in `edged.sources`; the
    config's checks and `open_source` both learn it from there (no chain of ifs to extend)."""
    (tmp_path / "thermal_source.py").write_text(THERMAL)
    dist = tmp_path / "edged_thermal-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: edged-thermal\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[edged.sources]\nthermal = thermal_source:KIND\nwhistle = thermal_source:WHISTLE\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    source_kinds.installed.cache_clear()
    try:
        assert [k.name for k in source_kinds.installed()][:2] == ["thermal", "whistle"]
        source = open_source(SourceConfig(uri="thermal:/dev/i2c-1"))
        assert type(source).__name__ == "ThermalSource" and source.uri == "thermal:/dev/i2c-1"
        assert [f.image[0, 0, 0] for f in iter(source.read, None)] == [31, 32, 33]
        assert type(open_source(SourceConfig(uri="synthetic"))) is SyntheticSource  # the built-in kinds still answer
        # the config asks the same table whether a source hears: a speech backbone takes the new sound kind only
        Config(source={"uri": "whistle:0"}, backbone={"family": "speech_embedding"})
        with pytest.raises(ValueError, match="backbone.family"):
            Config(source={"uri": "thermal:0"}, backbone={"family": "speech_embedding"})
    finally:
        source_kinds.installed.cache_clear()
