"""The package's shape is checked, not trusted: layers point one way, no import cycles, no TensorFlow on the serve path.

The checks read every import statement (module level and inside functions) of edged/ and
plugins/ from source, and import every serving module in a fresh interpreter with TensorFlow,
Keras and edged.learn made unimportable.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import ROOT

# Rank of each part of the package: a module imports only modules of lower rank, or its own package.
LAYERS = {
    "edged": 0, "edged.errors": 0, "edged.files": 0, "edged.wire": 0, "edged.source_kinds": 0,
    "edged.config": 1,
    "edged.runtime": 2, "edged.sources": 2, "edged.scene": 2,
    "edged.state": 3,
    "edged.heads": 4, "edged.mqtt": 4,
    "edged.serve": 5,
    "edged.commands": 6,
    "edged.fleet": 7,
    "edged.daemon": 8,
    "edged.web": 9,
    "edged.cli": 10,
    "edged.learn": 11, "edged.__main__": 11,
    "edged.bench": 12,
}
TENSORFLOW = ("tensorflow", "keras")
# Only these may import TensorFlow, Keras or edged.learn: the learn package, benchmarks, heads' trainer modules.
MAY_TRAIN = ("edged.learn", "edged.bench", "edged_plugins.classifier_train", "edged_plugins.boxes_train",
             "edged_plugins.knn_train", "edged_plugins.objects_train")


def module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[0] == "plugins":
        parts[0] = "edged_plugins"
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules(root: Path) -> dict[str, Path]:
    out = {}
    for folder in ("edged", "plugins"):
        for path in sorted((root / folder).rglob("*.py")):
            out[module_name(path, root)] = path
    return out


def imports_of(name: str, path: Path) -> set[str]:
    """Every module `name` imports, wherever the statement is; relative imports resolved."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            found.add(target)
            for alias in node.names:  # `from . import x` may name a submodule
                found.add(f"{target}.{alias.name}")
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    mods = modules(root)
    graph = {}
    for name, path in mods.items():
        graph[name] = {m for m in imports_of(name, path) if m in mods and m != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def layer_of(name: str) -> tuple[str, int] | None:
    best = None
    for prefix, rank in LAYERS.items():
        if name == prefix or name.startswith(prefix + "."):
            if best is None or len(prefix) > len(best[0]):
                best = (prefix, rank)
    return best


def violations(root: Path) -> list[str]:
    """Layer, TensorFlow and cycle violations of the tree at `root`."""
    problems = []
    mods = modules(root)
    for name, path in mods.items():
        trains = name.startswith(MAY_TRAIN)
        mine = layer_of(name)
        for target in sorted(imports_of(name, path)):
            top = target.split(".")[0]
            if not trains and (top in TENSORFLOW or target == "edged.learn" or target.startswith("edged.learn.")):
                problems.append(f"{name} imports {target}: only edged.learn, edged.bench and heads' trainer modules may")
            theirs = layer_of(target) if target in mods else None
            if mine and theirs and theirs[0] != mine[0] and theirs[1] >= mine[1]:
                problems.append(f"{name} ({mine[0]}) imports {target} ({theirs[0]}): layers point the other way")
    for comp in cycles(import_graph(root)):
        problems.append("import cycle: " + " -> ".join(comp))
    return problems


def test_layers_point_one_way_no_tensorflow_no_cycles():
    assert violations(ROOT) == []


def test_every_module_has_a_layer():
    missing = [n for n in modules(ROOT) if n.startswith("edged") and not n.startswith("edged_plugins") and layer_of(n) is None]
    assert missing == []


def test_contract_catches_a_bad_import_and_a_cycle(tmp_path):
    """The check can fail: a TensorFlow import on the serve path and a cycle are both reported."""
    for folder in ("edged", "plugins"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    capture = tmp_path / "edged" / "serve" / "capture.py"
    capture.write_text(capture.read_text() + "\n\ndef _sneaky():\n    import keras  # noqa\n")
    store = tmp_path / "edged" / "state" / "store.py"
    store.write_text(store.read_text() + "\nfrom ..serve import headset  # noqa\n")
    found = violations(tmp_path)
    assert any("edged.serve.capture imports keras" in p for p in found), found
    assert any(p.startswith("import cycle:") and "edged.state.store" in p for p in found), found
    assert any("edged.state.store (edged.state) imports edged.serve.headset" in p for p in found), found


BLOCK = textwrap.dedent('''
    import importlib, sys
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("tensorflow", "keras") or name == "edged.learn" or name.startswith("edged.learn."):
                raise ModuleNotFoundError(f"blocked: {name}", name=name)
            return None
    sys.meta_path.insert(0, Block())
    failed = []
    for name in sys.argv[1:]:
        try:
            importlib.import_module(name)
        except Exception as e:
            failed.append(f"{name}: {type(e).__name__}: {e}")
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))
    print(repr((failed, loaded)))
''')


def test_serving_modules_import_with_tensorflow_blocked():
    names = [n for n in modules(ROOT) if not n.startswith(MAY_TRAIN) and n != "edged.__main__"]
    assert "edged.daemon.daemon" in names and "edged_plugins.classifier" in names
    out = subprocess.run([sys.executable, "-c", BLOCK, *names], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    failed, loaded = eval(out.stdout.strip().splitlines()[-1])
    assert failed == [] and loaded == []


# One place per concept: where the knowledge lives, and the marks that show it leaking elsewhere.
ONE_PLACE = {
    "a path under the state folder": ("edged/state/layout.py", re.compile(r"state_path\s*/|state_dir\)?\s*/\s*[\"']")),
    "a paho client": ("edged/mqtt/client.py", re.compile(r"mqtt\.Client\(")),
    "a version folder staged by hand": ("edged/state/versions.py", re.compile(r"\.staging\(\)|versions\.commit\(")),
    "what kind of source a URI names": ("edged/source_kinds.py",
                                        re.compile(r"""(startswith|endswith)\(["'](audio:|synthetic|http://|\.wav)""")),
}


def test_each_concept_lives_in_one_place():
    leaks = []
    for what, (home, mark) in ONE_PLACE.items():
        for path in sorted(list((ROOT / "edged").rglob("*.py")) + list((ROOT / "plugins").rglob("*.py"))):
            rel = path.relative_to(ROOT).as_posix()
            if rel != home and mark.search(path.read_text()):
                leaks.append(f"{rel}: {what} (belongs in {home})")
    assert leaks == []


def test_every_package_folder_is_installed():
    """A regular (not editable) install ships exactly the packages pyproject.toml lists: each folder must be there."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {"edged." + p.parent.relative_to(ROOT / "edged").as_posix().replace("/", ".")
               for p in (ROOT / "edged").rglob("__init__.py") if p.parent != ROOT / "edged"}
    missing = (folders | {"edged", "edged_plugins"}) - listed
    assert not missing, f"package folders not in pyproject.toml [tool.setuptools] packages: {sorted(missing)}"


FLEET_WING = ("parcels", "signing", "trust", "bundles", "roster")


def test_the_fleet_wing_holds_what_a_fleet_trusts():
    """Issue 36, 2: parcels, signing, certificates and revocation, bundles and the roster live in edged/fleet; mqtt/ is
    transport (it imports neither the fleet nor what a device keeps), state/ what a device keeps."""
    graph = import_graph(ROOT)
    for part in FLEET_WING:
        assert (ROOT / "edged" / "fleet" / f"{part}.py").is_file(), part
        assert not list((ROOT / "edged").glob(f"[!f]*/{part}.py")), f"{part}.py outside edged/fleet"
    transport = {f"{name} imports {target}" for name, targets in graph.items() if name.startswith("edged.mqtt")
                 for target in targets if target.startswith(("edged.fleet", "edged.state"))}
    assert transport == set()
    kept = {f"{name} imports {target}" for name, targets in graph.items() if name.startswith("edged.state")
            for target in targets if target.startswith(("edged.fleet", "edged.mqtt"))}
    assert kept == set()


def test_source_kinds_are_one_table_below_everything():
    """Issue 36, 3: the config's checks and `open_source` ask one table (edged.source_kinds), which imports nothing of
    edged, so a kind of source is added in one place."""
    graph = import_graph(ROOT)
    assert {m for m in graph["edged.source_kinds"] if m.startswith("edged")} == set()
    assert any("edged.source_kinds" in graph[m] for m in graph if m.startswith("edged.config."))
    assert "edged.source_kinds" in graph["edged.sources"]
