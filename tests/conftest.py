"""Fixtures shared by every test folder.

The `sicot enroll` fixtures of the trainer and serving tests: two tiny trained models
(sicot and cosine, 1 short epoch through the TFX run_fn), a catalogue, and the sicot model
enrolled with it; a third (sicot with the listing loss) only for the test that asks for it.
Built once per session (about 3 minutes on 2 CPUs).

`chromium`: headless Chromium (Debian package `chromium`, installed by
scripts/install_chromium.sh when missing) that loads a local HTML file from a fresh profile,
with networking features off (the pages are files; nothing but loopback is ever reached),
and returns what it rendered: the DOM after scripts ran, and a screenshot.
"""
import json
import os
import shutil
import subprocess
import types

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--disable-default-apps", "--disable-extensions", "--mute-audio",
         "--allow-file-access-from-files", "--virtual-time-budget=5000"]


def _find_chromium():
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="session")
def chromium(tmp_path_factory):
    binary = _find_chromium()
    if binary is None:
        result = subprocess.run([os.path.join(ROOT, "scripts", "install_chromium.sh")],
                                capture_output=True, text=True, timeout=900)
        binary = _find_chromium()
        if binary is None:
            pytest.fail("headless Chromium is needed and could not be installed: "
                        + (result.stderr or result.stdout)[-2000:])

    def run(extra, profile):
        return subprocess.run([binary, *FLAGS, f"--user-data-dir={profile}", *extra],
                              capture_output=True, text=True, timeout=180)

    def render(html_path, out_dir, width=1200, height=2400):
        """(DOM text after scripts ran, screenshot PNG path) of a local page."""
        url = "file://" + os.path.abspath(html_path)
        dom = run(["--dump-dom", url], tmp_path_factory.mktemp("chromium_profile"))
        assert dom.returncode == 0, dom.stderr[-2000:]
        shot = os.path.join(str(out_dir), "screenshot.png")
        done = run([f"--screenshot={shot}", f"--window-size={width},{height}",
                    "--hide-scrollbars", url], tmp_path_factory.mktemp("chromium_profile"))
        assert done.returncode == 0 and os.path.isfile(shot), done.stderr[-2000:]
        return dom.stdout, shot

    return types.SimpleNamespace(binary=binary, render=render)


def _tiny_dataset_module():
    import importlib.util

    path = os.path.join(os.path.dirname(__file__), "trainer", "tiny_dataset.py")
    spec = importlib.util.spec_from_file_location("sicot_tests_tiny_dataset_enroll", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TINY = _tiny_dataset_module()
NEW_COLOURS = {"teal_new": (30, 140, 140), "grey_new": (128, 128, 128)}


def _train(root, transform, preset, name=None, **changes):
    """A `sicot train --out`-like folder from the TFX run_fn (1 short epoch), named `name`
    (default: the preset)."""
    from tfx.v1.components import FnArgs

    from sicot.trainer.model.config import ModelConfig
    from sicot.trainer.task import run_fn

    config = ModelConfig.preset(preset).replace(
        embedding_dim=8, token_dim=6, attention_rank=3, epochs=1, crt_epochs=1,
        batch_size=16, **changes)
    out = os.path.join(root, name or preset)
    run_fn(FnArgs(train_files=[transform.transformed_files["train"]],
                  eval_files=[transform.transformed_files["eval"]],
                  transform_output=transform.transform_output_dir,
                  transform_graph_path=transform.transform_output_dir,
                  serving_model_dir=os.path.join(out, "export", "1"),
                  model_run_dir=os.path.join(out, "run"), train_steps=4, eval_steps=None,
                  custom_config={"model": config.to_dict()}))
    with open(os.path.join(out, "train_report.json"), "w") as f:
        json.dump({"model": preset, "transform_output": transform.transform_output_dir,
                   "transformed_files": transform.transformed_files,
                   "saved_model": os.path.join(out, "export", "1")}, f)
    return out


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """`sicot train --out`-like folders of a sicot and a cosine model."""
    root = tmp_path_factory.mktemp("enroll")
    transform = TINY.build(str(root / "data"))
    return {"sicot": _train(str(root), transform, "sicot"),
            "cosine": _train(str(root), transform, "cosine"), "root": root,
            "transform": transform}


@pytest.fixture(scope="session")
def trained_listing(trained):
    """A sicot model trained with the listing -> visual loss (`listing_weight`), same data."""
    return _train(str(trained["root"]), trained["transform"], "sicot", name="sicot_listing",
                  listing_weight=1.0)


@pytest.fixture(scope="session")
def catalogue(trained):
    """Two new SKUs (2 photos; listing only), an update of a trained class, and bad lines."""
    folder = trained["root"] / "catalogue"
    (folder / "photos").mkdir(parents=True)
    rng = np.random.default_rng(9)
    for name, colour in NEW_COLOURS.items():
        for i in range(2):
            (folder / "photos" / f"{name}{i}.png").write_bytes(TINY.image_bytes(colour, rng))
    (folder / "photos" / "class2.png").write_bytes(TINY.image_bytes(TINY.COLOURS[2], rng))
    lines = [
        {"label": "teal_new", "title": "word1 teal", "tags": ["gift"],
         "images": ["photos/teal_new0.png", "photos/teal_new1.png", "photos/nope.png"]},
        {"label": "grey_listing", "title": "word3 sale", "tags": ["shop"]},
        {"label": "class2", "title": "word2", "images": ["photos/class2.png"]},
        "{broken",
        {"label": "ghost", "title": "zzz unknownword"},  # no photo, no known word
    ]
    path = folder / "catalogue.jsonl"
    path.write_text("".join((l if isinstance(l, str) else json.dumps(l)) + "\n"
                            for l in lines))
    return path


@pytest.fixture(scope="session")
def enrolled(trained, catalogue):
    from sicot.trainer.enrollment import catalogue as enroll

    out = str(trained["root"] / "enrolled")
    report = enroll.enroll_folder(trained["sicot"], str(catalogue), out, log=lambda *_: None)
    return {"out": out, "report": report}


@pytest.fixture(scope="session")
def enroll_queries():
    """Query images: one of each trained class's colour, then the two new SKUs' colours."""
    rng = np.random.default_rng(3)
    return [TINY.image_bytes(c, rng) for c in TINY.COLOURS + list(NEW_COLOURS.values())]
