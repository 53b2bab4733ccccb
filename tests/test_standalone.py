"""The standalone build (packaging/hushbridge.spec, PyInstaller): it builds, and the frozen
program does the main jobs with its bundled data. Run with ``python -m pytest -m standalone
tests/test_standalone.py`` where the ``[build]`` extra is installed (it builds for minutes, so
the default run leaves it out, as it does the ``train`` tests)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytestmark = pytest.mark.standalone
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def frozen(tmp_path_factory):
    pytest.importorskip("PyInstaller")
    out = tmp_path_factory.mktemp("dist")
    r = subprocess.run([sys.executable, "-m", "PyInstaller", "--noconfirm", "--distpath", str(out), "--workpath",
                        str(out / "work"), str(ROOT / "packaging" / "hushbridge.spec")],
                       cwd=ROOT / "packaging", capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-4000:]
    exe = out / "hushbridge" / "hushbridge"
    assert exe.is_file()
    # JACK's and PortAudio's libraries are the system's, never this machine's copy (python-rtmidi's
    # wheel brings a libjack of its own, libjack-<hash>.so, as it does in any install)
    assert not [p.name for p in (out / "hushbridge").rglob("*") if p.name.startswith(("libjack.so", "libportaudio.so"))]
    # the training pipeline (torch, the [train] extra) is not part of the program
    assert not [p for p in (out / "hushbridge").rglob("*") if "train" in p.parts and "models" in p.parts]
    return exe


def run(exe, *args, cwd=None):
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=600, cwd=cwd)


def test_the_frozen_program_cleans_files_with_its_bundled_presets_and_model(frozen, tmp_path):
    from hushbridge import __version__

    r = run(frozen, "--version")
    assert r.returncode == 0 and __version__ in r.stdout
    r = run(frozen, "demo", "--out", tmp_path / "demo.wav", cwd=tmp_path)  # the bundled clip
    assert r.returncode == 0, r.stderr
    assert sf.info(tmp_path / "demo.wav").duration > 5
    noisy = (0.05 * np.random.default_rng(0).standard_normal(48000 * 3)).astype(np.float32)
    sf.write(tmp_path / "in.wav", noisy, 48000, subtype="FLOAT")
    r = run(frozen, "process", tmp_path / "in.wav", tmp_path / "out.wav", "--preset", "stream", "-q")
    assert r.returncode == 0, r.stderr  # the denoise model (onnxruntime) in the frozen program
    assert "cannot fuse" not in r.stderr  # the kernels' sources travel: the fused chain works frozen too
    assert sf.info(tmp_path / "out.wav").frames == noisy.size
    # a stereo pair: the denoiser links it through its link-group graph, bundled beside the model
    assert list(frozen.parent.rglob("denoise.linked.onnx"))
    sf.write(tmp_path / "pair.wav", np.stack([noisy, 0.5 * noisy]).T, 48000, subtype="FLOAT")
    r = run(frozen, "process", tmp_path / "pair.wav", tmp_path / "pair_out.wav", "--preset", "stream", "-q")
    assert r.returncode == 0, r.stderr
    assert sf.info(tmp_path / "pair_out.wav").channels == 2
    r = run(frozen, "loudness", "--json", tmp_path / "out.wav")
    assert r.returncode == 0 and json.loads(r.stdout)[0]["integrated_lufs"] is not None


def test_the_frozen_program_answers_dash_m_as_the_child_processes_it_starts_need(frozen, tmp_path):
    r = run(frozen, "-m", "hushbridge", "presets")
    assert r.returncode == 0 and "dialogue" in r.stdout
    r = run(frozen, "install-host-scripts", "resolve", "--dest", tmp_path / "Scripts", "--out-dir", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    settings = json.loads((tmp_path / "Scripts" / "Utility" / "hushbridge_resolve.json").read_text())
    assert settings["hushbridge"][0] == str(frozen) and Path(settings["preset_dirs"][1], "dialogue.toml").is_file()
    entry = (tmp_path / "Scripts" / "Utility" / "HushBridge Clean Audio.py").read_text()
    lib = entry.split("sys.path.insert(0, ")[1].split(")")[0].strip("'\"")
    assert Path(lib, "hushbridge_resolve.py").is_file()  # Resolve imports it from the frozen folder
    r = subprocess.run([*settings["hushbridge"], "presets"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "podcast" in r.stdout  # the command the Resolve script runs
    r = run(frozen, "install-host-scripts", "ableton", "--dest", tmp_path / "RS")
    assert r.returncode == 0 and (tmp_path / "RS" / "HushBridge" / "surface.py").is_file()
