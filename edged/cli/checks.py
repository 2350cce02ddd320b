"""What `edged config check` verifies beyond structure: heads, backbone choices, files that must exist, the source."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ..config import Config
from ..errors import BackboneError
from ..runtime.speech import speech_models_folder
from ..serve.choice import LADDER
from ..serve.worker_client import tensorflow_available
from ..state.backbones import cache_folder, local_imagenet_weights, local_tflite_extractors

# Widths and input sizes Keras has ImageNet weights for.
IMAGENET = {
    "mobilenet_v1": ({0.25, 0.5, 0.75, 1.0}, {128, 160, 192, 224}),
    "mobilenet_v2": ({0.35, 0.5, 0.75, 1.0, 1.3, 1.4}, {96, 128, 160, 192, 224}),
    "mobilenet_v3_small": ({0.75, 1.0}, {224}),
}


def _missing(path) -> bool:
    return not Path(path).expanduser().is_file()


def check_meaning(cfg: Config) -> tuple[list[str], list[str]]:
    """(errors, warnings), each naming its key."""
    errors, warnings = [], []
    bb = cfg.backbone
    if bb.family in IMAGENET:
        alphas, sizes = IMAGENET[bb.family]
        if bb.weights == "imagenet":
            if bb.alpha not in alphas:
                errors.append(f"backbone.alpha: {bb.family} has ImageNet weights for alpha {sorted(alphas)}, not {bb.alpha:g}")
            if bb.input_size not in sizes:
                warnings.append(f"backbone.input_size: {bb.family} ImageNet weights were trained at {sorted(sizes)} px; "
                                f"{bb.input_size} px works but embeds less well")
            if bb.auto and not tensorflow_available():
                extractors = local_tflite_extractors()
                warnings.append(
                    f"backbone.choose = 'auto': TensorFlow is not installed here, so unless state_dir/backbones/ "
                    f"holds a converted MobileNet v1 the first start serves a TFLite feature extractor: "
                    f"{', '.join(sorted({f.name for f in extractors}))}" if extractors else
                    "backbone.choose = 'auto': TensorFlow is not installed here and no TFLite feature extractor is in "
                    "$EDGED_WEIGHTS_DIR: unless state_dir/backbones/ holds a converted MobileNet v1, the first start "
                    "has no backbone (docs/raspberry-pi.md)")
            elif bb.auto:
                if not any(local_imagenet_weights(alpha, size) for alpha, size in LADDER):
                    warnings.append("backbone.choose = 'auto' builds MobileNet v1 backbones from Keras' ImageNet "
                                    "download at the first start; offline, put the weight files in $EDGED_WEIGHTS_DIR")
            elif not (cache_folder(bb, cfg.state_path) / "backbone.tflite").is_file():
                warnings.append("backbone.weights = 'imagenet' downloads the weights on first start; offline, set "
                                "backbone.weights to a local .weights.h5 file")
        elif bb.weights != "none" and _missing(bb.weights):
            errors.append(f"backbone.weights: file not found: {bb.weights}")
    if bb.family == "speech_embedding":
        try:
            speech_models_folder(bb.path)
        except BackboneError as e:
            errors.append(f"backbone.path: {e}")
    if bb.family in ("keras", "tflite"):
        if not bb.path:
            errors.append(f"backbone.path: required for family {bb.family!r}")
        elif _missing(bb.path):
            errors.append(f"backbone.path: file not found: {bb.path}")
    tls = cfg.mqtt.tls
    if cfg.mqtt.enabled and tls is not None:
        for key in ("ca_certs", "certfile", "keyfile"):
            value = getattr(tls, key)
            if value and _missing(value):
                errors.append(f"mqtt.tls.{key}: file not found: {value}")
        if bool(tls.certfile) != bool(tls.keyfile):
            errors.append("mqtt.tls: certfile and keyfile go together")
        if tls.insecure:
            warnings.append("mqtt.tls.insecure = true: the broker's certificate and host name are not checked")
    if cfg.mqtt.password and not cfg.mqtt.username:
        errors.append("mqtt.password: given without mqtt.username")
    if cfg.fleet.trust == "broker":
        warnings.append("fleet.trust = \"broker\": models, head versions, examples, jobs and trainers are taken from "
                        "anyone who can publish on the broker; enrol the fleet (edged fleet init / enroll) and use "
                        "\"signed\"")
    web = cfg.web
    if web.enabled and importlib.util.find_spec("aiohttp") is None:
        errors.append("web.enabled: the teach page needs aiohttp, which is not installed here: pip install 'edged[web]'")
    if web.enabled and web.host not in ("127.0.0.1", "localhost", "::1") and not web.token:
        errors.append(f"web.token: required when web.host is {web.host!r} (not loopback): anyone on the network "
                      f"could see the camera and teach the device")
    for i, camera in enumerate(cfg.cameras):
        key = f"sources[{i}].uri" if camera.name else "source.uri"
        uri = camera.source.uri.strip()
        if uri.isdigit():
            if not Path(f"/dev/video{uri}").exists():
                warnings.append(f"{key}: no camera /dev/video{uri} on this machine now (the daemon retries)")
        elif "://" not in uri and not uri.startswith(("synthetic", "audio:")) and not Path(uri).exists():
            warnings.append(f"{key}: {uri} does not exist (the daemon retries until it does)")
    return errors, warnings
