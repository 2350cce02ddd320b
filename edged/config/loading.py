"""A TOML file plus ``--set key.path=value`` overrides, read and validated; errors name the file and key path."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from pydantic import ValidationError

from ..errors import ConfigError
from .root import Config


if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def redact_uri(uri: str) -> str:
    """`rtsp://user:secret@cam/...` -> `rtsp://user:***@cam/...`: for status, logs and printouts."""
    return re.sub(r"(://[^:/@\s]*:)[^@/\s]*@", r"\1***@", uri)


def redacted_dump(cfg: "Config") -> dict:
    """The config as a dict with every secret replaced by '***'."""
    data = cfg.model_dump()
    data["source"]["uri"] = redact_uri(data["source"]["uri"])
    for source in data["sources"]:
        source["uri"] = redact_uri(source["uri"])
    if data["mqtt"].get("password"):
        data["mqtt"]["password"] = "***"
    if data["web"].get("token"):
        data["web"]["token"] = "***"
    return data


def format_validation_error(err: ValidationError, origin: str) -> str:
    lines = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        lines.append(f"{origin}: {path}: {msg}")
    return "\n".join(lines)


def _parse_override(item: str) -> tuple[list[str], object]:
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected key.path=value")
    key, raw = item.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # bare words are strings
    return key.strip().split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    for item in overrides:
        path, value = _parse_override(item)
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part} is not a table")
        node[path[-1]] = value
    return data


def read_config_data(path: str | Path | None = None, overrides: list[str] | None = None) -> tuple[dict, str]:
    """The merged, unvalidated data of a TOML file plus overrides, and where it came from."""
    data: dict = {}
    origin = "defaults"
    if path is not None:
        origin = str(path)
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"{origin}: file not found") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{origin}: not valid TOML: {e}") from None
    if overrides:
        data = apply_overrides(data, overrides)
        origin += " + overrides"
    return data, origin


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read, merge and validate; raise ConfigError naming file and key path."""
    data, origin = read_config_data(path, overrides)
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, origin)) from None


def dump_config(cfg: Config) -> str:
    return json.dumps(redacted_dump(cfg), indent=2)
