"""The teach page: an aiohttp server in its own thread and event loop, beside the daemon.

No business logic here: every action is a command sent through the daemon's dispatcher (the same
validation and replies as MQTT); the page reads frames and predictions the frame loop already made.
The live view is encoded on this thread at `[web] fps`, so a browser never slows the frame loop.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import secrets
import threading
import time
from pathlib import Path
from typing import Optional, Protocol

import cv2
import numpy as np
from aiohttp import web

from ..config import WebConfig
from ..errors import CorrelationId, EdgedError
from .guard import RequestGuard

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
ID_PATTERN = r"[0-9a-f]{12}"
SESSION_COOKIE = "edged_session"
MAX_SESSIONS = 1000
PAGE_KEY_HEADER = "X-Edged-Key"  # the session's page key, on every API request authenticated by the cookie
PAGE_KEY_PARAM = "key"  # ... or in the query, for what a tag loads (images, the live view, the event stream)
PAGE_KEY_SLOT = '<meta name="edged-page-key" content="">'  # where index.html receives it, once
MAX_EXAMPLE_ID = (1 << 63) - 1


class WebResponder:
    """A Responder answering an HTTP request: the final reply resolves a future, progress goes to every page."""

    def __init__(self, loop: asyncio.AbstractEventLoop, name: str, events: "Events"):
        self.corr_id: CorrelationId = None
        self.loop, self.name, self.events = loop, name, events
        self.future: asyncio.Future = loop.create_future()

    def _resolve(self, payload: dict) -> None:
        self.loop.call_soon_threadsafe(lambda: self.future.done() or self.future.set_result(payload))

    def progress(self, result: dict) -> None:
        self.events.publish("progress", {"command": self.name, "id": self.corr_id, "progress": result})

    def done(self, result: dict) -> None:
        self._resolve({"id": self.corr_id, "command": self.name, "ok": True, "final": True, "result": result})

    def fail(self, error: str) -> None:
        self._resolve({"id": self.corr_id, "command": self.name, "ok": False, "final": True, "error": error})


class Events:
    """Fan-out of server-sent events to every connected page (thread-safe publish)."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.queues: set[asyncio.Queue] = set()

    def publish(self, kind: str, data: dict) -> None:
        message = f"event: {kind}\ndata: {json.dumps(data, default=str)}\n\n"

        def put():
            for q in list(self.queues):
                if q.qsize() < 100:
                    q.put_nowait(message)

        self.loop.call_soon_threadsafe(put)


class PageSources(Protocol):
    """All the page needs from the daemon (edged.daemon.daemon.Daemon.page_sources): commands go through the same
    dispatcher as MQTT; the rest is read."""

    def submit(self, name: str, payload: bytes, responder) -> None: ...

    def last_frame(self, source: Optional[str] = None): ...

    def source_names(self) -> list[str]: ...

    def latest(self) -> dict: ...

    def sound(self) -> Optional[dict]: ...

    def model_input(self, frame) -> np.ndarray: ...

    def status(self) -> dict: ...

    def reviews(self) -> list[dict]: ...

    def review_frame(self, item_id: str) -> Path: ...

    def example_frame(self, example_id: int): ...


class WebServer:
    def __init__(self, cfg: WebConfig, sources: PageSources):
        self.cfg = cfg
        self.sources = sources
        self.loop = asyncio.new_event_loop()
        self.events = Events(self.loop)
        self.runner: Optional[web.AppRunner] = None
        self._thread = threading.Thread(target=self._serve, name="web", daemon=True)
        self._ready = threading.Event()
        self._error: Optional[BaseException] = None
        self.clients = 0
        self.closing = False
        self.guard = RequestGuard(cfg)
        self.sessions: dict[str, str] = {}  # session cookie -> the page key only the page that opened it knows

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "WebServer":
        self._thread.start()
        self._ready.wait(15)
        if self._error is not None:
            raise EdgedError(f"web: cannot listen on {self.cfg.host}:{self.cfg.port}: {self._error}")
        log.info("teach page on http://%s:%d/", self.cfg.host, self.cfg.port)
        return self

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.runner = web.AppRunner(self.app(), access_log=None)
            self.loop.run_until_complete(self.runner.setup())
            self.loop.run_until_complete(web.TCPSite(self.runner, self.cfg.host, self.cfg.port).start())
        except BaseException as e:  # noqa: BLE001  (reported by start())
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        self.loop.create_task(self._ticker())
        self.loop.run_forever()

    def stop(self) -> None:
        self.closing = True  # the live and event streams end; then the runner can close

        def wake():
            for q in list(self.events.queues):
                q.put_nowait(None)

        if self.loop.is_running():
            self.loop.call_soon_threadsafe(wake)
        if self.runner is not None and self.loop.is_running():
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    # -- the app -----------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard], client_max_size=70 * 1024)
        app.router.add_get("/", self.index)
        app.router.add_static("/static/", STATIC)
        app.router.add_get("/api/live.mjpg", self.live)
        app.router.add_get("/api/events", self.sse)
        app.router.add_post("/api/cmd/{name}", self.command)
        app.router.add_get(r"/api/example/{id:\d{1,19}}.jpg", self.example_frame)
        app.router.add_get(r"/api/review/{id:" + ID_PATTERN + r"}.jpg", self.review_frame)
        app.router.add_get(r"/api/event/{id:\d{8}-\d{6}-[0-9a-f]{6}}.jpg", self.event_snapshot)
        return app

    @web.middleware
    async def _guard(self, request: web.Request, handler):
        """Every request names a host this daemon serves (DNS rebinding); a state change comes from this page
        (another origin's page is an attacker, token or not) as JSON; with a token, the caller proves it."""
        refusal = self.guard.refusal(request.method, request.headers)
        if refusal is not None:
            return web.json_response({"error": refusal}, status=403)
        token = self.cfg.token
        if token is None:
            return await handler(request)
        given = request.query.get("token") or ""
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            given = header[len("Bearer "):]
        if hmac.compare_digest(given.encode(), token.encode()):
            if request.query.get("token") is None:
                return await handler(request)  # a script with the token (Authorization: Bearer)
            # the page opened with ?token=: a session cookie, and a page key that only this page gets (in its HTML)
            session, request["page_key"] = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
            self._remember(session, request["page_key"])
            response = await handler(request)
            if isinstance(response, web.StreamResponse) and not response.prepared:
                response.set_cookie(SESSION_COOKIE, session, httponly=True, samesite="Strict")
            return response
        key = self.sessions.get(request.cookies.get(SESSION_COOKIE, ""))
        if key is None:
            return web.json_response({"error": "a token is required: open the page as /?token=..."}, status=401)
        # a browser sends the cookie to every port of this host: a server on another port got it and replayed it.
        # The page itself and its static files hold nothing; the API needs the page key too, which only this
        # page's origin holds (its local storage)
        if request.path.startswith("/api/"):
            shown = request.headers.get(PAGE_KEY_HEADER) or request.query.get(PAGE_KEY_PARAM) or ""
            if not hmac.compare_digest(shown.encode(), key.encode()):
                return web.json_response({"error": "the session cookie alone is not enough: open the page as "
                                                   "/?token=... again"}, status=401)
        return await handler(request)

    def _remember(self, session: str, key: str) -> None:
        """A session: a random id for the cookie (the token itself never sits in a cookie) and its page key."""
        self.sessions[session] = key
        while len(self.sessions) > MAX_SESSIONS:
            self.sessions.pop(next(iter(self.sessions)))

    async def index(self, request: web.Request) -> web.StreamResponse:
        page = (STATIC / "index.html").read_text()
        key = request.get("page_key", "")
        return web.Response(text=page.replace(PAGE_KEY_SLOT, f'<meta name="edged-page-key" content="{key}">'),
                            content_type="text/html", headers={"Cache-Control": "no-store"})

    async def command(self, request: web.Request) -> web.Response:
        """POST /api/cmd/<name> with a JSON body: the dispatcher runs it; the final reply is the response."""
        name = request.match_info["name"]
        body = await request.read()
        responder = WebResponder(self.loop, name[:64], self.events)
        self.sources.submit(name, body, responder)
        reply = await responder.future
        return web.json_response(reply, status=200 if reply["ok"] else 400, dumps=lambda o: json.dumps(o, default=str))

    def _jpeg(self, image) -> Optional[bytes]:
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])
        return data.tobytes() if ok else None

    async def live(self, request: web.Request) -> web.StreamResponse:
        """MJPEG of what the backbone sees (the centre crop the model is given), at [web] fps."""
        source = request.query.get("source")
        if source is not None and source not in self.sources.source_names():
            raise web.HTTPBadRequest(text=f"no source {source[:64]!r}")
        response = web.StreamResponse(headers={"Content-Type": "multipart/x-mixed-replace; boundary=frame",
                                               "Cache-Control": "no-store"})
        await response.prepare(request)
        self.clients += 1
        last = None
        try:
            while not self.closing:
                frame = self.sources.last_frame(source)
                if frame is not None and frame is not last:
                    last = frame  # a frame the gate did not infer has no model input yet: made here, off the loop
                    jpeg = await self.loop.run_in_executor(None, lambda f=frame: self._jpeg(
                        cv2.cvtColor(self.sources.model_input(f), cv2.COLOR_RGB2BGR)))
                    if jpeg:
                        await response.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                             + str(len(jpeg)).encode() + b"\r\n\r\n" + jpeg + b"\r\n")
                await asyncio.sleep(1.0 / self.cfg.fps)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.clients -= 1
        return response

    async def sse(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"})
        await response.prepare(request)
        queue: asyncio.Queue = asyncio.Queue()
        self.events.queues.add(queue)
        try:
            await response.write(self._status_event().encode())
            while not self.closing:
                message = await queue.get()
                if message is None:
                    break
                await response.write(message.encode())
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.events.queues.discard(queue)
        return response

    def _status_event(self) -> str:
        return f"event: status\ndata: {json.dumps(self.sources.status(), default=str)}\n\n"

    async def _ticker(self) -> None:
        """Predictions (and a sound source's level) at the live view's rate, status every 2 s, new review items and events: to every open page."""
        last_status, last_review, last_event = 0.0, None, None
        while True:
            await asyncio.sleep(1.0 / self.cfg.fps)
            if not self.events.queues:
                continue
            self.events.publish("predictions", dict(self.sources.latest()))
            sound = self.sources.sound()
            if sound is not None:  # the level meter, at the live view's rate
                self.events.publish("sound", sound)
            now = time.monotonic()
            if now - last_status > 2.0:
                last_status = now
                self.events.publish("status", self.sources.status())
                items = self.sources.reviews()
                newest = items[-1]["id"] if items else None
                if newest != last_review:
                    last_review = newest
                    self.events.publish("review", {"items": items[-30:]})
                recent = await self.loop.run_in_executor(None, self.sources.recent_events)
                latest = (recent[0]["id"], recent[0].get("end")) if recent else None
                if latest != last_event:
                    last_event = latest
                    self.events.publish("scene_events", {"events": recent})

    async def example_frame(self, request: web.Request) -> web.Response:
        example_id = int(request.match_info["id"][:20])
        if example_id > MAX_EXAMPLE_ID:
            raise web.HTTPNotFound(text="no such example")
        try:
            image = await self.loop.run_in_executor(None, self.sources.example_frame, example_id)
        except EdgedError as e:
            raise web.HTTPNotFound(text=str(e)) from None
        return web.Response(body=self._jpeg(cv2.resize(image, (96, int(96 * image.shape[0] / image.shape[1])))),
                            content_type="image/jpeg")

    async def event_snapshot(self, request: web.Request) -> web.Response:
        jpeg = await self.loop.run_in_executor(None, self.sources.event_snapshot, request.match_info["id"])
        if jpeg is None:
            raise web.HTTPNotFound(text="no such event snapshot")
        return web.Response(body=jpeg, content_type="image/jpeg")

    async def review_frame(self, request: web.Request) -> web.Response:
        path = self.sources.review_frame(request.match_info["id"])
        if not path.is_file():
            raise web.HTTPNotFound(text="no such review item")
        return web.FileResponse(path)


def web_component(cfg: WebConfig):
    """The daemon component that serves the page: start(daemon) -> stop."""

    def start(daemon):
        return WebServer(cfg, daemon.page_sources()).start().stop

    return start
