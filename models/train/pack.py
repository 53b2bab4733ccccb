"""Pack the training pools of :class:`.data.MixtureSampler` into one small folder, for a machine
that has no ``../shared`` (a lent GPU machine: no network, 64 MiB per call).

Usage::

    python -m hushbridge.models.train.pack --out .carry/pack
    python -m hushbridge.models.train.train --pack .carry/pack ...

Speech, TTS and noise clips are stored as Ogg Opus (``soundfile``; Opus takes 8/12/16/24/48 kHz, so
22.05 and 44.1 kHz clips are first resampled to 24 and 48 kHz with soxr) with each clip's measured
``band_hz`` kept from the original; the rooms (already 48 kHz, peak 1) as float16 in a compressed
npz. Opus is lossy: the packed pools are the same recordings, perceptually transparent at these
rates but not sample-exact, so batches drawn from a pack differ from batches drawn from
``../shared`` (the model card says which training session used one). The loudness normalisation of
the noise clips is applied before packing, as the sampler applies it after loading.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from .data import Clip, split_dev_noise

OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
# MixConfig fields that decide what goes into the pools (the rest act per mixture)
_POOL_KEYS = ("tts_count", "synth_rir_count", "pra_rir_count", "synth_music_count", "synth_music_version")
# Opus bitrate setting per pool (soundfile's compression_level: 0 = highest bitrate)
LEVELS = {"speech": 0.85, "tts": 0.9, "noise": 0.8, "real_music": 0.8, "synth_music": 0.8}


def _opus_rate(sr: int) -> int:
    return next(r for r in OPUS_RATES if r >= sr) if sr <= 48000 else 48000


def _write_clip(path: Path, clip: Clip, level: float) -> dict:
    audio, sr = clip.audio, clip.sr
    to = _opus_rate(sr)
    if to != sr:
        audio = soxr.resample(audio, sr, to, quality="HQ").astype(np.float32)
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    scale = 0.98 / peak if peak > 0.98 else 1.0  # Opus files hold [-1, 1]
    sf.write(str(path), audio * scale, to, format="OGG", subtype="OPUS", compression_level=level)
    return {"file": path.name, "sr": to, "band_hz": clip.band_hz, "scale": scale, "name": clip.name}


def write_pack(sampler, out: Path) -> dict:
    """Write ``sampler``'s pools to ``out`` (created); returns the manifest."""
    out.mkdir(parents=True, exist_ok=True)
    manifest: dict = {"pools": {}, "rirs_base": sampler.rirs_from_step[0]}
    cfg = getattr(sampler, "cfg", None)
    if cfg is not None:  # what a loading run compares its own pool settings with
        manifest["built_with"] = {k: getattr(cfg, k) for k in _POOL_KEYS}
    noise = sampler.noise
    if getattr(sampler, "dev_noise", None):  # all of them, in the split's order: a loading run splits again
        noise = sorted(noise + sampler.dev_noise, key=lambda c: c.name)
    pools = {"speech": sampler.speech, "tts": sampler.tts, "noise": noise,
             "real_music": getattr(sampler, "real_music", []), "synth_music": getattr(sampler, "synth_music", [])}
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as ex:
        for pool, clips in pools.items():
            jobs = [ex.submit(_write_clip, out / f"{pool}-{i:04d}.opus", c, LEVELS[pool]) for i, c in enumerate(clips)]
            manifest["pools"][pool] = [j.result() for j in jobs]
    np.savez_compressed(out / "rirs.npz", **{f"r{i:04d}": h.astype(np.float16) for i, h in enumerate(sampler.rirs)})
    tmp = out / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, out / "manifest.json")
    return manifest


def _read_clip(folder: Path, e: dict) -> Clip:
    audio, sr = sf.read(str(folder / e["file"]), dtype="float32")
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    return Clip((audio / e["scale"]).astype(np.float32), int(sr), float(e["band_hz"]), e["name"])


def load_pack(sampler, folder: Path, verbose: bool = True) -> None:
    """Fill ``sampler``'s pools from a pack written by :func:`write_pack`. The pools are the
    pack's: a run whose pool settings differ is told so (build the pack with its config)."""
    try:
        manifest = json.loads((Path(folder) / "manifest.json").read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{folder}: not a data pack (no manifest.json; make one with "
                                "python -m hushbridge.models.train.pack --out DIR)") from None
    built = manifest.get("built_with")
    differ = [f"{k} {built[k]} in the pack, {getattr(sampler.cfg, k)} in the config"
              for k in _POOL_KEYS if built is not None and k in built and built[k] != getattr(sampler.cfg, k)]
    if built is None or differ:
        print(f"warning: the pack's pools come from {'an unrecorded config' if built is None else 'another config'}"
              + (f" ({'; '.join(differ)})" if differ else "") + ": they replace this run's pool settings; "
              "pack --config <this config> builds a matching pack", file=sys.stderr, flush=True)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as ex:
        for pool in ("speech", "tts", "noise", "real_music", "synth_music"):  # packs before music: none
            setattr(sampler, pool, list(ex.map(lambda e: _read_clip(folder, e), manifest["pools"].get(pool, []))))
    if sampler.cfg.p_music > 0 and not (sampler.real_music or sampler.synth_music):
        raise ValueError(f"{folder}: the pack holds no music but data.p_music > 0: pack it with this config")
    z = np.load(folder / "rirs.npz")
    sampler.rirs = [z[k].astype(np.float32) for k in sorted(z.files)]
    base = int(manifest["rirs_base"])
    sampler.rirs_from_step = base, sampler.cfg.pra_from_step
    sampler.wide = [c for c in sampler.speech if c.band_hz > 15000]
    sampler.noise, sampler.dev_noise = split_dev_noise(sampler.noise, sampler.cfg.dev_noise_every)
    if verbose:
        print(f"data (pack {folder}): {sum(c.audio.size / c.sr for c in sampler.speech) / 60:.1f} min real speech "
              f"({len(sampler.wide)} full-band clips), {len(sampler.tts)} TTS clips, "
              f"{sum(c.audio.size / c.sr for c in sampler.noise) / 60:.1f} min real noise, "
              f"{len(sampler.rirs)} RIRs", flush=True)


def main(argv: list[str] | None = None) -> int:
    from .data import MixtureSampler
    from .train import apply_overrides, load_config, mix_config

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=str(Path(__file__).resolve().parent / "denoise.toml"))
    ap.add_argument("--out", required=True, help="pack folder (keep it out of git, e.g. .carry/pack)")
    ap.add_argument("--set", action="append", default=[], metavar="TABLE.KEY=VALUE",
                    help="override one config value, as train --set does (pool sizes: data.tts_count ...)")
    args = ap.parse_args(argv)
    cfg = apply_overrides(load_config(args.config), args.set)
    sampler = MixtureSampler(mix_config(cfg), seed=int(cfg["seed"]))
    out = Path(args.out)
    write_pack(sampler, out)
    size = sum(p.stat().st_size for p in out.iterdir())
    print(f"pack: {out} ({size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
