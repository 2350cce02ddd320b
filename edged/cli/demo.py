"""`edged run --demo`: synthetic scenes, a local broker, and two shapes taught before serving."""

from __future__ import annotations

import logging

from ..config import Config, load_config
from ..errors import BackboneError
from ..mqtt.broker import local_broker
from ..serve.backbone import embed_image, open_backbone
from ..serve.capture import CaptureJob
from ..sources import open_source
from ..state.store import Store

log = logging.getLogger(__name__)

DEMO_SHAPES = ("triangle", "rectangle")


class Demo:
    def __init__(self, args):
        self.args = args
        self.broker = None

    def config(self) -> Config:
        overrides = [
            "source.uri='synthetic:clutter=4'", "source.width=160", "source.height=160", "source.fps=5",
            "backbone.family='mobilenet_v1'", "backbone.alpha=0.25", "backbone.input_size=128",
            "backbone.weights='imagenet'", "device='demo'", "state_dir='./edged-demo-state'",
            "serve.print_predictions=true", "mqtt.stats_interval_s=10",
        ] + list(self.args.set or [])
        cfg = load_config(getattr(self.args, "config", None), overrides)
        return cfg

    def start(self, cfg: Config) -> None:
        self.broker = local_broker()
        cfg.mqtt.host, cfg.mqtt.port = "127.0.0.1", self.broker.port
        self._ensure_backbone(cfg)
        self._teach(cfg)
        base = f"{cfg.mqtt.prefix}/{cfg.device}"
        print(f"demo broker on 127.0.0.1:{self.broker.port}; watch it with:\n"
              f"  mosquitto_sub -p {self.broker.port} -t '{base}/#' -v\n"
              f"teach it from the stream with:\n"
              f"  mosquitto_pub -p {self.broker.port} -t {base}/cmd/capture -m '{{\"label\": \"scene\", \"count\": 5}}'\n",
              flush=True)

    def _ensure_backbone(self, cfg: Config) -> None:
        """ImageNet weights when they can be downloaded (or are cached); random weights otherwise."""
        try:
            _, engine = open_backbone(cfg)
            engine.close()
        except BackboneError as e:
            log.warning("ImageNet weights unavailable (%s); the demo uses random weights", str(e).splitlines()[-1][:200])
            cfg.backbone.weights = "none"

    def _teach(self, cfg: Config) -> None:
        """Store 15 examples of each shape from shape-only synthetic streams, once."""
        info, engine = open_backbone(cfg)
        store = Store(cfg.state_path / "store")
        try:
            for shape in DEMO_SHAPES:
                if store.counts().get(shape):
                    continue
                src_cfg = cfg.source.model_copy(update={"uri": f"synthetic:shape={shape},clutter=4", "seed": 1000})
                source = open_source(src_cfg)
                source.open()
                job = CaptureJob(store, info.id, shape, 15, 0.0)
                while not job.done:
                    frame = source.read()
                    job.offer(frame.image, embed_image(engine, frame.image))
                log.info("demo: taught %d examples of %s", job.stored, shape)
        finally:
            store.close()
            engine.close()

    def stop(self) -> None:
        if self.broker is not None:
            self.broker.stop()
