"""Training, export and model versions for the serving process: numpy heads fit here, Keras work goes to the worker.

Every trained head version is saved into a staging folder and committed (fsynced, renamed to
`heads/<name>/vN`, made current) before it is swapped in, so what serves is what a restart loads.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from pathlib import Path
from typing import Callable, Optional, Protocol

import numpy as np

from ..config import BACKGROUND, Config
from ..errors import NO_TENSORFLOW, HeadError, TrainingError, VersionError
from ..heads.base import FitContext, Head, Progress, TrainRequest
from ..runtime.engine import Engine, EngineOptions
from ..runtime.memory import release_free_memory
from ..runtime.speech import SpeechEngine
from ..sources.audio import Spectrogram
from ..sources.wav import SAMPLE_RATE
from ..sources.augment import augmenter
from ..sources.preprocess import to_pixels
from ..state.backbones import BackboneInfo
from ..state.layout import StateLayout
from ..state.store import Examples, Store
from .headset import HeadSet
from .worker_client import TrainerWorker, tensorflow_available

log = logging.getLogger(__name__)


EMBEDDER_IDLE_S = 60.0  # the interpreter that embeds for trains, labels and marks is closed after this long unused
SPEECH_NO_JOBS = ("the speech embedding has no Keras form here: fine-tuning and exported models are for the image "
                  "backbones (train gives the numpy head, which serves)")

class RemoteJobs(Protocol):
    """A trainer node reached over the broker (edged.fleet.remote_trainer.RemoteTrainer)."""

    def available(self) -> Optional[str]: ...

    def run(self, job: str, head: str, params: dict, progress: Progress = None,
            stop: Optional[threading.Event] = None) -> dict: ...

    def cancel(self) -> bool: ...


class Learning:
    def __init__(self, cfg: Config, store: Store, backbone: BackboneInfo, heads: HeadSet,
                 remote: Optional[RemoteJobs] = None):
        self.cfg = cfg
        self.store = store
        self.backbone = backbone
        self.heads = heads
        self.worker = TrainerWorker(cfg.trainer.idle_exit_s)
        self.remote = remote  # None: no broker, so TensorFlow jobs run here or not at all
        self._embed_lock = threading.Lock()
        self._embedder: Optional[Engine | SpeechEngine] = None
        self._embedder_used = 0.0  # monotonic time of its last use
        self._release: Optional[threading.Timer] = None
        self._spectrogram = Spectrogram(size=cfg.cameras[0].source.audio.image_size)  # a sound's picture

    def start(self) -> None:
        layout = StateLayout(self.cfg.state_path)
        for kind in ("heads", "models"):
            for name in self.heads.classes:
                removed = layout.versions(kind, name).clean_staging()
                if removed:
                    log.info("removed %d stale staging folders under %s/%s", removed, kind, name)
        orphans = self.store.collect_orphans()
        if orphans:
            log.info("removed %d frame files no example points at", orphans)
        if self.cfg.trainer.preload:
            self.worker.preload()

    def _class(self, name: str, job: str) -> type[Head]:
        if name not in self.heads.classes:
            raise HeadError(f"{job}.head: unknown head {name!r}; installed: {sorted(self.heads.classes)}")
        return self.heads.classes[name]

    def _own_engine(self):
        """An interpreter of our own for embedding off the frame loop (whose interpreter is not shared across
        threads), built on first use and kept while trains, labels and marks use it: closed EMBEDDER_IDLE_S after
        the last use (at 1.0/224 it holds about 35 MB). Call with `_embed_lock` held."""
        self._embedder_used = time.monotonic()
        if self._embedder is None:
            runtime = self.cfg.runtime
            if self.backbone.family == "speech_embedding":
                self._embedder = SpeechEngine(Path(self.backbone.path).parent, runtime.num_threads, runtime.interpreter)
            else:
                self._embedder = Engine(EngineOptions(self.backbone.path, num_threads=runtime.num_threads,
                                                      interpreter=runtime.interpreter, scaling=self.backbone.scaling))
            self._release_in(EMBEDDER_IDLE_S)
        return self._embedder

    def _release_in(self, seconds: float) -> None:
        self._release = threading.Timer(seconds, self._release_if_idle)
        self._release.daemon = True
        self._release.start()

    def _release_if_idle(self) -> None:
        with self._embed_lock:
            if self._embedder is None:
                return
            idle = time.monotonic() - self._embedder_used
            if idle < EMBEDDER_IDLE_S:
                self._release_in(EMBEDDER_IDLE_S - idle)
                return
            self._embedder.close()
            self._embedder = None
        release_free_memory(collect=False)
        log.debug("the embedding interpreter of trains and labels closed after %.0f s unused", idle)

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        if self.backbone.family == "speech_embedding":
            raise HeadError("the speech embedding embeds sound, not pictures: this needs the example's sound")
        with self._embed_lock:
            return self._own_engine().embed(pixels)

    def embed_sound(self, samples: np.ndarray) -> np.ndarray:
        """A sound window's embedding: the speech embedding's, or the image backbone's of its spectrogram picture."""
        if self.backbone.family == "speech_embedding":
            with self._embed_lock:
                return self._own_engine().embed_sound(samples)
        return self.embed_pixels(to_pixels(self._spectrogram.image(samples), self.backbone.input_size))

    def sound_examples(self, clip: np.ndarray, count: int, margin_s: float = 0.0) -> list[tuple]:
        """A sound event's clip as up to `count` examples: windows (the source's `window_s`) spread over it, without
        the `margin_s` before and after the event that a clip keeps when it is long enough; each window's picture,
        samples and embedding."""
        audio = self.cfg.cameras[0].source.audio
        n, hop = int(audio.window_s * SAMPLE_RATE), max(1, int(audio.hop_s * SAMPLE_RATE))
        margin = int(margin_s * SAMPLE_RATE)
        body = np.asarray(clip[margin:len(clip) - margin] if len(clip) - 2 * margin >= n else clip, np.float32)
        if len(body) < n:
            windows = [np.pad(body, (n - len(body), 0))]
        else:  # at least a hop apart: closer windows are near-copies
            count = max(1, min(count, 1 + (len(body) - n) // hop))
            starts = sorted({int(round(s)) for s in np.linspace(0, len(body) - n, count)})
            windows = [body[s:s + n] for s in starts]
        return [(self._spectrogram.image(w), w, self.embed_sound(w)) for w in windows]

    def embed_image(self, image_bgr: np.ndarray) -> np.ndarray:
        return self.embed_pixels(to_pixels(image_bgr, self.backbone.input_size))

    def fit_context(self, request: TrainRequest) -> FitContext:
        """Stored frames, the serving backbone's embedding, and altered copies of the stored examples (of their
        sounds where they keep them, heard over the room's: the speech backbone embeds nothing else), for an
        in-process fit."""
        size = self.backbone.input_size
        pixels = lambda ids: np.stack([to_pixels(self.store.load_frame(int(i)), size) for i in ids])  # noqa: E731
        hears_only = self.backbone.family == "speech_embedding"
        return FitContext(
            request=request, input_size=size,
            frames=lambda ids: [self.store.load_frame(int(i)) for i in ids],
            pixels=pixels, embed=self.embed_pixels,
            augmented=augmenter(pixels, None if hears_only else self.embed_pixels,
                                sounds=lambda ids: [self.store.load_audio(int(i)) for i in ids],
                                embed_sound=self.embed_sound, rooms=lambda: self.store.room_sounds(BACKGROUND)),
        )

    def train(self, name: str, request: TrainRequest, progress: Progress = None,
              stop: Optional[threading.Event] = None,
              later: Optional[Callable[[str, Callable[[Progress], dict]], str]] = None) -> dict:
        """Train a new version (in process, or in the TensorFlow worker), commit it, then swap it in.

        With `later` (`later(what, job) -> what to tell the user`: the job runs after this returns), what a user waits
        for is a head that serves: a head that `searches` is fitted cheaply first (no augmented copies, one learner)
        and serves at once; the search over augmented copies and learners follows as a job and replaces it only when
        its cross-validated accuracy is higher. Mode "auto" then goes on, in the same job, to fine-tune the backbone
        where the head asks for it and a worker or trainer node can run it; that version serves only if
        cross-validation kept it. Without `later`, all of it happens before this returns."""
        cls = self._class(name, "train")
        if cls.trains_in_worker(request):
            return self._train_in_worker(name, request, progress, stop)
        options = self.heads.options(name)
        quick = later is not None and request.search and cls.searches(options)
        result = self._fit_in_process(cls, name, dataclasses.replace(request, search=False) if quick else request,
                                      progress)
        fine_tune = request.mode == "auto" and cls.fine_tunes_after_fit(options)
        missing = self._why_no_jobs() if fine_tune else None
        if missing:
            result["fine_tune"], fine_tune = f"not tried: {missing}", False
        if not quick and not fine_tune:
            return result
        cheap = {"version": result["version"], "metrics": result["metrics"]}

        def follow(p: Progress) -> dict:
            searched = self._search(cls, name, request, cheap, p) if quick else None
            if not fine_tune:
                return searched
            tuned = self._fine_tune(name, request, self._serving(name, searched or cheap), p, stop)
            return {**tuned, "search": searched["search"]} if searched else tuned

        if later is None:
            if progress:
                progress({"phase": "auto", "step": f"{name} {result['version']} is serving (cross-validated "
                                                   f"{result['metrics'].get('cv_accuracy')}); fine-tuning the backbone next"})
            return follow(progress)
        said = later(f"fine-tune {name}" if fine_tune else f"search {name}", follow)
        if quick:
            result["search"] = said
        if fine_tune:
            result["fine_tune"] = said
        return result

    def _serving(self, name: str, fallback: dict) -> dict:
        """The version of head `name` serving now and its figures (what a fine-tune is measured against)."""
        head = self.heads.instances.get(name)
        current = StateLayout(self.cfg.state_path).heads(name).current()
        if head is None or current is None or not getattr(head, "metrics", None):
            return fallback
        return {"version": current, "metrics": head.metrics}

    def _search(self, cls: type[Head], name: str, request: TrainRequest, cheap: dict, progress: Progress) -> dict:
        """The full fit (augmented copies, every learner) after the cheap one serves: committed and served only
        when its cross-validated accuracy beats the cheap fit's on the same examples. Augmented copies are limited
        to what the backbone embeds within `search_budget_s` at its measured speed."""
        examples = self.store.examples(self.backbone.id)
        options = self.heads.options(name)
        copies = self._affordable_copies(options, examples, progress)
        head = cls(options.model_copy(update={"augment_copies": copies}) if copies is not None else options)
        if progress:
            progress({"phase": "search", "step": f"searching learners{' and augmented copies' if copies != 0 else ''} "
                                                 f"for {name} ({len(examples)} examples)"})
        metrics = head.fit(examples, self.fit_context(request), progress)
        before, after = cheap["metrics"].get("cv_accuracy") or 0.0, metrics.get("cv_accuracy") or 0.0
        if metrics.get("examples") != cheap["metrics"].get("examples"):
            return {**cheap, "search": f"not used: the examples changed since {cheap['version']} was trained "
                                       f"(train again)"}
        if after <= before:
            return {**cheap, "search": f"kept {cheap['version']}: the search's best ({metrics.get('chosen')}, "
                                       f"cross-validated {after}) does not beat {before}"}
        result = self._commit(name, head, metrics)
        result["search"] = (f"{result['version']} serves: {metrics.get('chosen')} cross-validated {after}, against "
                            f"{before} of {cheap['version']}")
        return result

    def _commit(self, name: str, head: Head, metrics: dict) -> dict:
        """A head fitted here: saved as the next version of `name`, then served (edged.serve.learning.serve_version)."""
        with StateLayout(self.cfg.state_path).heads(name).draft() as draft:
            head.save(draft.folder)
        retired = self.serve_version(name, activate=False, opened=head)
        return self._said_retired(name, {"head": name, "version": draft.version, "metrics": metrics}, retired)

    def _affordable_copies(self, options, examples: Examples, progress: Progress) -> Optional[int]:
        """How many augmented copies of each example the search embeds: the head's own number, fewer when the
        backbone, timed here on one stored frame, would take longer than `search_budget_s`; None when the head
        has no such option."""
        wanted = getattr(options, "augment_copies", None)
        budget = getattr(options, "search_budget_s", None)
        if not wanted or budget is None or not len(examples) or self.backbone.family == "speech_embedding":
            return wanted
        pixels = to_pixels(self.store.load_frame(int(examples.ids[0])), self.backbone.input_size)
        started = time.perf_counter()
        self.embed_pixels(pixels)
        seconds = max(time.perf_counter() - started, 1e-4)
        affordable = int(budget / (seconds * len(examples)))
        if affordable < wanted and progress:
            progress({"phase": "search", "step": f"{min(affordable, wanted)} augmented copies of each example, not "
                                                 f"{wanted}: the backbone takes {seconds * 1000:.0f} ms a frame here "
                                                 f"and the search has {budget:g} s"})
        return max(0, min(wanted, affordable))

    def _fine_tune(self, name: str, request: TrainRequest, frozen: dict, progress: Progress,
                   stop: Optional[threading.Event]) -> dict:
        """The backbone fine-tuned after the numpy head `frozen` serves; kept only if cross-validation says so."""
        tuned = self._train_in_worker(name, request, progress, stop)
        tuned["frozen"] = frozen
        if not tuned.get("activated", True):
            tuned["note"] = f"{tuned['metrics'].get('fine_tune')}; {frozen['version']} (frozen) keeps serving"
        return tuned

    def _train_in_worker(self, name: str, request: TrainRequest, progress: Progress,
                         stop: Optional[threading.Event]) -> dict:
        params = {"mode": request.mode, "epochs": request.epochs, "fine_tune_layers": request.fine_tune_layers,
                  "params": request.params}
        result = self._run_job("train", name, params, progress, stop)
        if not result.get("activated", True):
            return result  # committed for inspection; the version serving now stays
        retired = self.serve_version(name, activate=False)  # the train command decides whether it predicts
        return self._said_retired(name, result, retired)

    def serve_version(self, name: str, version: Optional[str] = None, activate: bool = True,
                      opened: Optional[Head] = None) -> Optional[str]:
        """Make a trained version of head `name` predict (`version`, default the current one): activated on disk,
        opened (or `opened`, the instance that was just fitted and saved as that version), swapped in, added to the
        active heads (with `activate`); an exported model of an older version stops serving. The one way a version
        starts serving, whoever made it (a train here, the worker, a trainer node, the fleet). Returns the model
        version that stopped serving, if one did."""
        versions = StateLayout(self.cfg.state_path).heads(name)
        if version is not None:
            versions.activate(version)
        if opened is not None:
            head, fused = opened, None
        else:
            head, fused = self.heads.open_head(name, versions.current_path())
            if fused is None and not head.ready:
                raise HeadError(f"{name!r} version {versions.current()} could not be loaded")
        self.heads.swap(name, head, fused)
        if activate and name not in self.heads.active:
            self.heads.activate(self.heads.active + [name])
        return self.heads.stop_serving_model(name)

    @staticmethod
    def _said_retired(name: str, result: dict, retired: Optional[str]) -> dict:
        if retired is not None:
            result["model"] = (f"model {retired} (exported from an older version) no longer serves: {name} "
                               f"{result.get('version')} predicts now; export it to serve a model again")
        return result

    def _fit_in_process(self, cls: type[Head], name: str, request: TrainRequest, progress: Progress) -> dict:
        examples = self.store.examples(self.backbone.id)
        if not len(examples):
            raise HeadError("the store has no examples yet: capture some first")
        head = cls(self.heads.options(name))
        return self._commit(name, head, head.fit(examples, self.fit_context(request), progress))

    def export(self, name: str, quantize: str, force: bool = False, progress: Progress = None,
               stop: Optional[threading.Event] = None) -> dict:
        """Export a fused model; when a model already serves this head, the new one replaces it."""
        self._class(name, "export")
        result = self._run_job("export", name, {"quantize": quantize, "force": force}, progress, stop)
        if name in self.heads.models:
            self.use_model(name)
        return result

    def _placement(self) -> tuple[Optional[str], Optional[str]]:
        """Where a TensorFlow job runs now, "here" or "remote" ([fleet] trainer), or (None, why it cannot)."""
        if self.backbone.family == "speech_embedding":
            return None, SPEECH_NO_JOBS
        where, here = self.cfg.fleet.trainer, tensorflow_available()
        if where == "local" or (where == "auto" and here):
            return ("here", None) if here else (None, "TensorFlow is not installed (pip install 'edged[train]')")
        lead = "[fleet] trainer is 'remote'" if where == "remote" else "TensorFlow is not installed here"
        if self.remote is None:
            return None, f"{lead}, and no trainer node is reachable (a running daemon reaches one over MQTT)"
        if self.remote.available() is None:
            return None, f"{lead}, and no trainer node is online"
        return "remote", None

    def _why_no_jobs(self) -> Optional[str]:
        """None when a TensorFlow job can run (here, or on a trainer node); else why not."""
        return self._placement()[1]

    def _run_job(self, job: str, name: str, params: dict, progress: Progress, stop: Optional[threading.Event]) -> dict:
        """A TensorFlow job: in the worker process here, or on a trainer node ([fleet] trainer)."""
        place, why = self._placement()
        if self.backbone.family == "speech_embedding":
            raise TrainingError(f"{job}: {SPEECH_NO_JOBS}")
        if place == "remote":
            return self.remote.run(job, name, params, progress, stop)
        if place is None and self.cfg.fleet.trainer != "local":
            raise TrainingError(NO_TENSORFLOW.format(job=job) + f" ({why}; edged trainer --fleet on a machine "
                                "with TensorFlow serves devices without it)")
        return self.worker.run(self.cfg, job, name, params, progress, stop)

    def use_model(self, name: str, version: Optional[str] = None) -> dict:
        """Serve head `name` from its exported model (`version`, default the current one)."""
        self._class(name, "activate.model")
        versions = StateLayout(self.cfg.state_path).models(name)
        previous = versions.current()
        if version:
            try:
                versions.activate(version)
            except VersionError as e:
                raise HeadError(str(e)) from None
        try:
            model = self.heads.open_model(versions.current_path(), name)
        except HeadError:
            if version and previous:
                versions.activate(previous)  # the refused version does not stay current
            raise
        self.heads.serve_model(name, model)
        return {"model": name, "version": model.folder.name, "sha256": model.sha[:16],
                "quantization": model.meta.get("quantization")}

    def rollback_model(self, name: str) -> dict:
        self._class(name, "rollback.model")
        versions = StateLayout(self.cfg.state_path).models(name)
        try:
            previous = versions.rollback()
        except VersionError as e:
            raise HeadError(str(e)) from None
        return self.use_model(name, previous)

    def cancel(self) -> bool:
        """Stop the running TensorFlow job, here or on a trainer node, if any."""
        stopped = self.worker.cancel()
        if self.remote is not None and self.remote.cancel():
            stopped = True
        return stopped

    def close(self) -> None:
        self.worker.close()
        if self._release is not None:
            self._release.cancel()
        with self._embed_lock:
            if self._embedder is not None:
                self._embedder.close()
                self._embedder = None
