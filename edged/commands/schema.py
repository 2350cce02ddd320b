"""Command payloads: parsed and validated into typed models; errors name what is wrong."""

from __future__ import annotations

from typing import Annotated, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .. import wire
from ..config import refuse_dedupe
from ..errors import CommandError, CorrelationId
from ..state.labels import label_problem

MAX_PAYLOAD = 64 * 1024
SQLITE_MAX = (1 << 63) - 1  # integers are bounded where they are parsed: SQLite's are 64-bit
ExampleId = Annotated[int, Field(ge=1, le=SQLITE_MAX)]


class _Cmd(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: CorrelationId = Field(None, description="correlation id, echoed in the reply")


class _Labelled(_Cmd):
    """A command naming a label: 1-64 letters, digits, '_', '-', '.', space."""

    label: str

    @field_validator("label")
    @classmethod
    def _label_ok(cls, v: str) -> str:
        return _checked_label(v)


def _checked_label(label: str) -> str:
    problem = label_problem(label)
    if problem is not None:
        raise ValueError(problem)
    return label


def _check_box(box) -> None:
    x1, y1, x2, y2 = box
    if not (0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1):
        raise ValueError("box must be x1 < x2 and y1 < y2, all within [0, 1]")


class LabelledBox(BaseModel):
    model_config = ConfigDict(extra="forbid")
    box: tuple[float, float, float, float] = Field(description="x1, y1, x2, y2 in [0, 1] of the frame")
    label: Optional[str] = Field(None, description="the object's label, default the capture's")

    @model_validator(mode="after")
    def _valid(self):
        _check_box(self.box)
        if self.label is not None:
            _checked_label(self.label)
        return self


class Capture(_Labelled):
    count: int = Field(10, ge=1, le=10_000)
    interval_ms: int = Field(200, ge=0, le=3_600_000)
    box: Optional[tuple[float, float, float, float]] = Field(None, description="x1, y1, x2, y2 in [0, 1] of the frame")
    boxes: Optional[list[LabelledBox]] = Field(None, min_length=1, max_length=100,
                                               description="several objects: [{box, label?}, ...] in frame coordinates")
    near_copy: Optional[float] = Field(None, ge=0.5, le=1.0, description="a frame at least this similar to an "
                                       "earlier one of the capture counts as a near-copy (kept, but not distinct); "
                                       "default [capture]")
    timeout_s: Optional[float] = Field(None, gt=0, le=86_400, description="end with what was stored by then; "
                                                                           "default [capture]")
    region: Optional[str] = Field(None, max_length=64, description="take the examples from this region's crop "
                                                                   "([[regions]]); default the whole frame")
    source: Optional[str] = Field(None, max_length=64, description="take the examples from this source "
                                                                   "([[sources]]); needed when there are several")

    @model_validator(mode="before")
    @classmethod
    def _no_dedupe(cls, data):
        return refuse_dedupe(data)

    @model_validator(mode="after")
    def _box_ordered(self):
        if self.box is not None:
            if self.boxes is not None:
                raise ValueError("give box (one object) or boxes (several), not both")
            _check_box(self.box)
        return self

    def objects(self) -> Optional[list[tuple[str, tuple]]]:
        """(label, box) of every object in the frame, or None when the capture has no box."""
        if self.boxes is not None:
            return [(b.label or self.label, tuple(b.box)) for b in self.boxes]
        return [(self.label, tuple(self.box))] if self.box is not None else None


class Forget(_Cmd):
    label: str = Field(max_length=64, pattern=r"^[\w][\w .\-]{0,63}$",
                       description="every example of this label is deleted (reserved names too: stores from before "
                                   "they were refused may hold them)")


class Empty(_Cmd):
    pass


class Activate(_Cmd):
    heads: Optional[list[str]] = Field(None, min_length=1, max_length=16, description="heads that predict")
    model: Optional[str] = Field(None, max_length=64, description="serve this head from its exported model")
    version: Optional[str] = Field(None, pattern=r"^v\d{1,6}$", description="model version, default the newest good one")

    @model_validator(mode="after")
    def _something(self):
        if self.heads is None and self.model is None:
            raise ValueError("give heads (a list of head names) or model (a head name)")
        if self.version is not None and self.model is None:
            raise ValueError("version goes with model")
        return self


class Train(_Cmd):
    head: str = Field("classifier", max_length=64)
    activate: bool = Field(True, description="make the trained head predict (added to the active heads)")
    mode: Literal["auto", "frozen", "fine_tune", "from_scratch"] = Field(
        "auto", description="frozen: numpy on stored embeddings; fine_tune / from_scratch: the backbone too "
                            "(TensorFlow); auto: frozen at once, then fine-tuned where TensorFlow or a trainer node "
                            "is there and the head asks for it, kept only when cross-validation says it helps")
    epochs: Optional[int] = Field(None, ge=1, le=10_000)
    fine_tune_layers: Optional[int] = Field(None, ge=0, le=1000)


class Export(_Cmd):
    head: str = Field("classifier", max_length=64)
    quantize: Literal["float32", "float16", "int8"] = "float32"
    force: bool = Field(False, description="keep the model even when the parity check fails")


class Rollback(_Cmd):
    model: str = Field(max_length=64)


class Label(_Labelled):
    review_id: str = Field(pattern=r"^[0-9a-f]{12}$", description="id of a review item (edged/<device>/review)")


class ListExamples(_Cmd):
    label: Optional[str] = Field(None, max_length=64, description="only this label")
    limit: int = Field(100, ge=1, le=10_000)
    offset: int = Field(0, ge=0, le=SQLITE_MAX)


class Delete(_Cmd):
    ids: list[ExampleId] = Field(min_length=1, max_length=10_000, description="example ids (from `examples`)")


class Relabel(_Labelled):
    ids: list[ExampleId] = Field(min_length=1, max_length=10_000, description="example ids (from `examples`)")


class Publish(_Cmd):
    model: str = Field(max_length=64, description="the head whose model (or head version) is shared")
    kind: Literal["model", "head"] = Field("model", description="model: exported TFLite; head: trained on embeddings")
    version: Optional[str] = Field(None, pattern=r"^v\d{1,6}$", description="default the current version")


class Share(_Cmd):
    label: Optional[str] = Field(None, description="only this label's examples; default all taught here")

    @field_validator("label")
    @classmethod
    def _label_ok(cls, v):
        return v if v is None else _checked_label(v)


class Events(_Cmd):
    event: Optional[str] = Field(None, max_length=40, description="one event's id: that event with its snapshot; "
                                                                  "default the list")
    limit: int = Field(20, ge=1, le=1000)
    head: Optional[str] = Field(None, max_length=64, description="only this head's events")
    label: Optional[str] = Field(None, max_length=64, description="only this label's events")


class Discard(_Cmd):
    review_id: str = Field(pattern=r"^[0-9a-f]{12}$")


class Snapshot(_Cmd):
    source: Optional[str] = Field(None, max_length=64, description="the source's newest frame; default the newest "
                                                                   "frame of any source")


class Wrong(_Cmd):
    """An event that was wrong: its best frame (or its sound) becomes an example of `label` (default `background`)."""

    event: Optional[str] = Field(None, pattern=r"^\d{8}-\d{6}-[0-9a-f]{6}$", description="the event's id "
                                 "(edged/<device>/event/...); default the newest event of `head`")
    head: Optional[str] = Field(None, max_length=64, description="with no event: that head's newest event")
    label: Optional[str] = Field(None, description="what it was (a label); default background, the scene itself")

    @field_validator("label")
    @classmethod
    def _label_ok(cls, v: Optional[str]) -> Optional[str]:
        return None if v is None else _checked_label(v)

    @model_validator(mode="after")
    def _which(self):
        if self.event is None and self.head is None:
            raise ValueError("give event (an event's id) or head (its newest event)")
        return self


COMMANDS: dict[str, type[_Cmd]] = {
    "capture": Capture,
    "forget": Forget,
    "status": Empty,
    "snapshot": Snapshot,
    "heads": Empty,
    "activate": Activate,
    "train": Train,
    "export": Export,
    "rollback": Rollback,
    "review": Empty,
    "label": Label,
    "discard": Discard,
    "examples": ListExamples,
    "models": Empty,
    "cancel": Empty,
    "delete": Delete,
    "relabel": Relabel,
    "publish": Publish,
    "share": Share,
    "state": Empty,
    "events": Events,
    "wrong": Wrong,
}


def parse(name: str, payload: bytes) -> _Cmd:
    """Validate one command; raise CommandError with a message naming the bad part (and, whenever the payload is
    a JSON object, carrying its correlation id, so that the sender hears of it at once)."""
    if len(payload) > MAX_PAYLOAD:
        raise CommandError(f"payload of {len(payload)} bytes is over the {MAX_PAYLOAD} byte limit")
    if payload.strip() == b"":
        data = {}
    else:
        try:
            data = wire.loads(payload, MAX_PAYLOAD)
        except UnicodeDecodeError as e:
            raise CommandError(f"payload is not UTF-8: {e}") from None
        except ValueError as e:
            raise CommandError(f"payload is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise CommandError(f"payload must be a JSON object, got {type(data).__name__}")
    corr = data.get("id")
    if not isinstance(corr, (str, int)) or isinstance(corr, bool):
        corr = None
    if name not in COMMANDS:
        raise CommandError(f"unknown command {name[:64]!r}; known: {', '.join(sorted(COMMANDS))}", corr)
    try:
        return COMMANDS[name].model_validate(data)
    except ValidationError as e:
        parts = []
        for err in e.errors():
            path = ".".join(str(p) for p in err["loc"]) or "payload"
            msg = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
            parts.append(f"{name}.{path}: {msg}")
        raise CommandError("; ".join(parts), corr) from None
