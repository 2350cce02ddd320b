"""Heads come from plugins: built-ins through the entry-point group, third-party from a folder or in process."""

import json
import textwrap

import pluggy
import pytest
from conftest import edged_cli

from edged.errors import HeadError
from edged.heads import hookimpl
from edged.heads.registry import head_classes, plugin_manager

NEAREST_MEAN = textwrap.dedent('''
    """A third-party head: nearest class mean."""
    from dataclasses import dataclass
    import numpy as np
    from edged.heads import Head, Prediction
    from edged.heads import hookimpl

    @dataclass
    class Options:
        temperature: float = 10.0

    class NearestMean(Head):
        """Cosine similarity to each class mean."""
        name = "nearest_mean"
        Options = Options
        incremental = True

        def __init__(self, options=None):
            super().__init__(options)
            self.sums = {}

        @property
        def ready(self):
            return bool(self.sums)

        @property
        def classes(self):
            return sorted(self.sums)

        def fit(self, examples, context=None, progress=None):
            self.sums = {}
            for label, emb in zip(examples.labels.tolist(), examples.embeddings):
                self.add(emb, label)
            return {"classes": len(self.sums)}

        def add(self, embedding, label, box=None):
            v = np.asarray(embedding, np.float32).ravel()
            self.sums[label] = self.sums.get(label, 0) + v / (np.linalg.norm(v) + 1e-12)

        def predict(self, embedding):
            q = np.asarray(embedding, np.float32).ravel()
            q = q / (np.linalg.norm(q) + 1e-12)
            sims = {k: float(s @ q / (np.linalg.norm(s) + 1e-12)) for k, s in self.sums.items()}
            e = {k: np.exp(self.options.temperature * v) for k, v in sims.items()}
            z = sum(e.values())
            best = max(e, key=e.get)
            return Prediction(best, e[best] / z, {k: v / z for k, v in e.items()})

    @hookimpl
    def register_heads(register):
        register(NearestMean)
''')


def test_builtin_heads_register_through_the_hook_like_plugins():
    from edged.heads.registry import DEFAULT_PLUGINS, plugin_sources

    pm = plugin_manager()
    assert {name for name, _ in pm.list_name_plugin()} >= set(DEFAULT_PLUGINS)
    classes = head_classes(pm)
    assert set(classes) >= {"knn", "classifier", "boxes"}
    assert plugin_sources(pm)["edged_plugins.knn"] == "built in"
    assert all(classes[n].__module__ == DEFAULT_PLUGINS[n] for n in DEFAULT_PLUGINS)


def test_misspelt_hookimpl_fails_loudly():
    class Bad:
        @hookimpl
        def register_head(self, register):  # misspelt: no such hook
            pass

    with pytest.raises(pluggy.PluginValidationError, match="register_head"):
        plugin_manager(extra=(Bad(),))


def test_duplicate_head_names_rejected():
    class Twin:
        @hookimpl
        def register_heads(self, register):
            from edged_plugins.knn import KnnHead

            class Other(KnnHead):
                pass

            register(Other)

    with pytest.raises(HeadError, match="two plugins"):
        head_classes(plugin_manager(extra=(Twin(),)))


def test_plugins_dir_head_serves_in_daemon(tmp_path, make_state, broker, probe, daemons):
    """An out-of-tree head file, loaded by the daemon, learns from captures and publishes predictions."""
    from conftest import backbone_settings, toml_config, write_config

    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "nearest_mean.py").write_text(NEAREST_MEAN)
    listing = edged_cli("heads", "--set", f"plugins_dir='{plugins}'")
    assert "nearest_mean" in listing.stdout, listing.stderr

    backbone = backbone_settings("none")
    state = make_state(backbone)
    text = toml_config(state, broker.port, "synthetic:shape=triangle,clutter=2", backbone, "plug")
    text = text.replace('state_dir =', f'plugins_dir = "{plugins}"\nstate_dir =')
    text += '\n[heads]\nactive = ["knn", "nearest_mean"]\n[heads.options.nearest_mean]\ntemperature = 5.0\n'
    d = daemons(write_config(tmp_path / "c.toml", text), tmp_path / "d.log")
    probe.wait_online("plug")
    reply = probe.request("plug", "capture", {"label": "tri", "count": 3, "interval_ms": 0})
    assert reply["ok"], reply
    topic = "edged/plug/prediction/nearest_mean"
    _, payload, _ = probe.wait_for(lambda t, p, r: t == topic, 20)
    pred = json.loads(payload)
    assert pred["label"] == "tri" and pred["head"] == "nearest_mean"
    heads = probe.request("plug", "heads", {})["result"]
    assert heads["active"] == ["knn", "nearest_mean"] and heads["heads"]["nearest_mean"]["ready"]
    assert d.stop() == 0


def test_bad_head_options_name_the_key(tmp_path):
    (tmp_path / "nm.py").write_text(NEAREST_MEAN)
    from edged.config import load_config
    from edged.serve.headset import HeadSet

    cfg = load_config(None, [f"plugins_dir='{tmp_path}'", "heads.active=['nearest_mean']",
                             "heads.options.nearest_mean.temprature=1.0", f"state_dir='{tmp_path}/s'"])

    class FakeStore:
        def examples(self, backbone):
            raise AssertionError("not reached")

    with pytest.raises(HeadError, match="heads.options.nearest_mean"):
        HeadSet.for_config(cfg, FakeStore(), type("B", (), {"id": "x"})(), head_classes(plugin_manager(cfg.plugins_dir)))


def test_readme_head_example_runs(tmp_path):
    """The head in docs/heads.md ("Writing a head") is complete: loaded from a plugins folder, it learns and predicts."""
    import re

    import numpy as np
    from conftest import ROOT

    from edged.config import load_config
    from edged.heads.options import head_options
    from edged.state.store import Examples

    section = (ROOT / "docs" / "heads.md").read_text()
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    (tmp_path / "nearest_mean.py").write_text(code)
    classes = head_classes(plugin_manager(str(tmp_path)))
    cls = classes["nearest_mean"]
    cfg = load_config(None, [f"plugins_dir='{tmp_path}'", "heads.nearest_mean.temperature=20.0"])
    head = cls(head_options(cfg.heads, cls))
    assert head.options.temperature == 20.0 and not head.ready
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=8), rng.normal(size=8)
    emb = np.stack([a + 0.1 * rng.normal(size=8) for _ in range(3)] + [b + 0.1 * rng.normal(size=8) for _ in range(3)])
    metrics = head.fit(Examples(np.arange(6), np.array(["a"] * 3 + ["b"] * 3), emb.astype(np.float32), [None] * 6))
    assert metrics == {"classes": 2} and head.ready
    assert head.predict(a).label == "a" and head.predict(b).label == "b"
    bad = load_config(None, [f"plugins_dir='{tmp_path}'", "heads.nearest_mean.temprature=2.0"])
    with pytest.raises(HeadError, match="heads.nearest_mean.temprature: unknown key"):
        head_options(bad.heads, cls)
