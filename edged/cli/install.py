"""`edged install-service`: systemd units pointing at this installation, config and state folders with safe modes."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import sys
from pathlib import Path

UNITS = Path(__file__).with_name("systemd")
PLACEHOLDER = "/opt/edged/bin/edged"


def edged_command() -> str:
    """The `edged` script beside this interpreter (a venv's bin/), else `python -m edged` of this interpreter."""
    script = Path(sys.executable).with_name("edged")
    return str(script) if script.is_file() else f"{sys.executable} -m edged"


def install(root: Path, user: str = "edged", chown: bool = True) -> tuple[list[str], list[str]]:
    """Write units and folders under `root` (/ on a device); return what was done and what is still wrong, for the
    user to read."""
    done, problems = [], []
    command = edged_command()
    unit_dir = root / "etc" / "systemd" / "system"
    unit_dir.mkdir(parents=True, exist_ok=True)
    for name in ("edged.service", "edged@.service"):
        text = (UNITS / name).read_text().replace(PLACEHOLDER, command)
        (unit_dir / name).write_text(text)
        (unit_dir / name).chmod(0o644)
        done.append(f"wrote {unit_dir / name} (ExecStart {command})")
    config_dir = root / "etc" / "edged"
    config_dir.mkdir(parents=True, exist_ok=True)
    config_dir.chmod(0o750)
    config = config_dir / "edged.toml"
    if config.exists():
        done.append(f"kept the existing {config}")
    else:
        shutil.copyfile(UNITS / "edged.example.toml", config)
        done.append(f"wrote {config} from the example: edit source.uri, device and mqtt")
    config.chmod(0o640)  # it may hold the MQTT password: readable by root and the service's group only
    state = root / "var" / "lib" / "edged"
    state.mkdir(parents=True, exist_ok=True)
    state.chmod(0o750)
    if chown:
        try:
            uid, gid = pwd.getpwnam(user).pw_uid, grp.getgrnam(user).gr_gid
        except KeyError:
            problems.append(f"user {user!r} does not exist: sudo useradd --system --groups video,audio {user}, then "
                            f"run this again (the service runs as {user!r}; its folders are not theirs yet)")
        else:
            os.chown(config_dir, 0, gid)
            os.chown(config, 0, gid)
            os.chown(state, uid, gid)
            done.append(f"{config} is root:{user} 0640, {state} is {user}:{user} 0750")
    return done, problems
