"""Head options from config tables: validated models, errors naming the key path."""

from __future__ import annotations

import dataclasses
from typing import Optional

from pydantic import BaseModel, TypeAdapter, ValidationError

from ..config import HeadsConfig
from ..errors import HeadError


def _explain(err: ValidationError, where: str) -> str:
    parts = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"])
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        parts.append(f"{where}.{path}: {msg}" if path else f"{where}: {msg}")
    return "; ".join(parts)


def build_options(head_cls, values: Optional[dict], where: str):
    """Instantiate `head_cls.Options` from a dict, types checked and unknown keys refused."""
    options_cls = head_cls.Options
    values = dict(values or {})
    try:
        if isinstance(options_cls, type) and issubclass(options_cls, BaseModel):
            return options_cls.model_validate(values)
        if dataclasses.is_dataclass(options_cls):
            known = {f.name for f in dataclasses.fields(options_cls)}
            unknown = sorted(set(values) - known)
            if unknown:
                raise HeadError("; ".join(f"{where}.{k}: unknown key" for k in unknown))
            return TypeAdapter(options_cls).validate_python(values)
    except ValidationError as e:
        raise HeadError(_explain(e, where)) from None
    raise HeadError(f"head {head_cls.name!r}: Options must be a HeadOptions model or a dataclass")


def head_options(heads: HeadsConfig, head_cls):
    """A head's options from `[heads.<name>]` (or the older `[heads.options.<name>]`)."""
    values, where = heads.options_for(head_cls.name)
    return build_options(head_cls, values, where)


def check_head_config(cfg, classes: dict) -> list[str]:
    """Every problem with `[heads]` against the installed heads: unknown names, bad option tables."""
    problems = []
    unknown = [h for h in cfg.heads.active if h not in classes]
    if unknown:
        problems.append(f"heads.active: unknown head(s) {unknown}; installed: {sorted(classes)}")
    named = set(cfg.heads.options) | set(cfg.heads.model_extra or {})
    for name in sorted(named):
        if name not in classes:
            problems.append(f"heads.{name}: no installed head is named {name!r}; installed: {sorted(classes)}")
            continue
        try:
            head_options(cfg.heads, classes[name])
        except HeadError as e:
            problems.append(str(e))
    return problems
