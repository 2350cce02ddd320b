"""`edged run --demo`: synthetic scenes, a local broker, two shapes taught before serving — and the truth printed
beside every prediction, with a running accuracy, so the demo shows whether it is right."""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Optional

import paho.mqtt.client as mqtt

from ..config import Config, load_config
from ..errors import BackboneError
from ..mqtt.broker import AmqttBroker, local_broker
from ..mqtt.client import make_client
from ..mqtt.topics import Topics
from ..serve.backbone import embed_image, open_backbone
from ..serve.capture import CaptureJob, CaptureRequest, CaptureTarget
from ..sources import open_source
from ..sources.synthetic import scene_at
from ..state.layout import StateLayout
from ..state.store import Store

log = logging.getLogger(__name__)

DEMO_SHAPES = ("triangle", "rectangle")
DEMO_CLUTTER = 4
WEIGHTS_NAME = "mobilenet_v1_0.25_128_imagenet_no_top.weights.h5"


def demo_state_dir() -> Path:
    """Outside the repository: $XDG_CACHE_HOME/edged/demo (~/.cache/edged/demo)."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edged" / "demo"


def local_weights() -> Optional[str]:
    """Real ImageNet weights on this disk: $EDGED_WEIGHTS, or the workspace's shared models folder."""
    candidates = [os.environ.get("EDGED_WEIGHTS"), Path(__file__).resolve().parents[3] / "shared" / "models" / WEIGHTS_NAME]
    for path in candidates:
        if path and Path(path).is_file():
            return str(path)
    return None


class Demo:
    def __init__(self, args):
        self.args = args
        self.broker = None
        self.client: Optional[mqtt.Client] = None
        self.right: dict[str, int] = {}  # per head: answers that matched the truth
        self.total: dict[str, int] = {}
        self._lock = threading.Lock()

    def config(self) -> Config:
        weights = local_weights() or "imagenet"
        overrides = [
            f"source.uri='synthetic:clutter={DEMO_CLUTTER}'", "source.width=160", "source.height=160", "source.fps=5",
            "backbone.family='mobilenet_v1'", "backbone.alpha=0.25", "backbone.input_size=128",
            f"backbone.weights='{weights}'", "device='demo'", f"state_dir='{demo_state_dir()}'",
            "mqtt.stats_interval_s=10", "heads.active=['knn']",
            "publish.predictions='every'", "gate.mode='always'",  # the demo shows every answer beside the truth
        ] + list(self.args.set or [])
        return load_config(getattr(self.args, "config", None), overrides)

    def start(self, cfg: Config) -> None:
        self.broker = local_broker()
        cfg.mqtt.host, cfg.mqtt.port = "127.0.0.1", self.broker.port
        if isinstance(self.broker, AmqttBroker):
            cfg.mqtt.protocol = AmqttBroker.protocol
            print("mosquitto is not installed: using the embedded amqtt broker, which speaks MQTT 3.1.1", flush=True)
        self._ensure_backbone(cfg)
        self._teach(cfg)
        self._watch(cfg)
        base = Topics(cfg.mqtt.prefix, cfg.device).base
        port = self.broker.port
        print(f"demo: state in {cfg.state_path}, backbone weights {cfg.backbone.weights}\n"
              f"broker on 127.0.0.1:{port}; watch its states and events with:  mosquitto_sub -p {port} "
              f"-t '{base}/state/#' -t '{base}/event/#' -v\n"
              f"train the classifier and serve it too:     edged cmd --set mqtt.port={port} --set device=demo "
              f"train --head classifier\n"
              f"each line: head, prediction, score, the truth the synthetic source drew, running accuracy\n",
              flush=True)

    def _ensure_backbone(self, cfg: Config) -> None:
        """ImageNet weights from this disk (or Keras' download); calibrated random weights when neither works."""
        try:
            _, engine = open_backbone(cfg)
            engine.close()
        except BackboneError as e:
            print(f"demo: no ImageNet weights, so random weights and chance-level answers; set EDGED_WEIGHTS to a "
                  f"{WEIGHTS_NAME} file for real ones. Why: {e}", flush=True)
            cfg.backbone.weights = "none"

    def _teach(self, cfg: Config) -> None:
        """Store 15 examples of each shape from shape-only synthetic streams, once."""
        info, engine = open_backbone(cfg)
        store = Store(StateLayout(cfg.state_path).store)
        try:
            for shape in DEMO_SHAPES:
                if store.counts().get(shape):
                    continue
                src_cfg = cfg.source.model_copy(update={"uri": f"synthetic:shape={shape},clutter={DEMO_CLUTTER}",
                                                        "seed": 1000})
                source = open_source(src_cfg)
                source.open()
                job = CaptureJob(CaptureRequest(shape, 15), CaptureTarget(store, info.id))
                while not job.done:
                    frame = source.read()
                    job.offer(frame.image, embed_image(engine, frame.image))
                log.info("demo: taught %d examples of %s", job.stored, shape)
        finally:
            store.close()
            engine.close()

    def _watch(self, cfg: Config) -> None:
        """Print each prediction beside the truth: the synthetic source's scene at that frame position."""
        src = cfg.source
        self.client = make_client(cfg.mqtt, "edged-demo-watch")

        def on_message(client, userdata, msg):
            pred = json.loads(msg.payload)
            truth = scene_at(src.seed, int(pred["pos"]), src.width, src.height, None, DEMO_CLUTTER).label
            head = pred["head"]
            with self._lock:  # each head's own running accuracy: a second head starts its own count
                self.total[head] = total = self.total.get(head, 0) + 1
                self.right[head] = right = self.right.get(head, 0) + (pred["label"] == truth)
                mark = "right" if pred["label"] == truth else "WRONG"
                line = (f"{head}: {pred['label']:9s} {pred['score']:.2f}  truth {truth:9s} {mark}  "
                        f"{head} accuracy {right}/{total} = {right / total:.2f}")
            print(line, flush=True)

        self.client.on_message = on_message
        self.client.connect("127.0.0.1", self.broker.port)
        self.client.subscribe(Topics(cfg.mqtt.prefix, cfg.device).prediction("+"))
        self.client.loop_start()

    def stop(self) -> None:
        if self.client is not None:
            self.client.loop_stop()
            self.client.disconnect()
        if self.broker is not None:
            self.broker.close()
