"""The fixed train/evaluation split of the shared data (``../shared/data``).

The split is written out in code, by file name, so that it never depends on a random seed or on the
order a directory is listed in. :func:`eval_split` returns the held-out files (benchmarks/quality.py
imports it); :func:`train_split` returns everything else that training may use. Files are read in
place and never copied into the project.

Held out for evaluation:

- speech: 14 of the 139 LibriSpeech train-clean-100 speakers (named below; chosen as every 10th
  by sorted name and written out, so that a file added or removed never moves a speaker), the four
  LibriSpeech test-clean speakers from Real-Time-Voice-Cloning, the three librosa LibriSpeech speakers,
  LJSpeech LJ050-0131, and two of the six 48 kHz VCTK speakers (p301 F US, p376 M Indian) plus both
  VCTK MP3s (p240, p260). LJSpeech is one speaker, whose LJ001 clips train: LJ050-0131 is an
  unseen utterance of a seen speaker, not an unseen speaker (the project benchmark's 16 synthetic
  mixtures, seed 0, do not draw it);
- noise: city traffic, ceiling fan, rustling leaves, steady rain (quietsleep), cafe, keyboard typing
  and one friction transient: different sources from anything in training, but for the friction
  transient, whose four short siblings in training (audiomentations' demo clips) may come from the
  same recording session;
- rooms: the OpenAIR medium hall and the clap RIR (the clap is dev-only by its README).
- always evaluation-only (never in either list of this module's training side): the real paired
  recordings ``paired_vctk_denoiser`` and ``deepfilternet`` (see :func:`paired_sets`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["EvalSplit", "shared_data_dir", "eval_split", "train_split", "paired_sets"]

_EVAL_SPEECH_EXTRA = (
    "librispeech_198-209-0000.ogg",
    "librispeech_3436-172162-0000.ogg",
    "librispeech_5703-47212-0000.ogg",
    "librispeech_rtvc_1320_00000.mp3",
    "librispeech_rtvc_3575_00000.mp3",
    "librispeech_rtvc_6829_00000.mp3",
    "librispeech_rtvc_8230_00000.mp3",
    "ljspeech_LJ050-0131.wav",
    "vctk_p301_102.wav",
    "vctk_p376_193.wav",
    "vctk_rtvc_p240_00000.mp3",
    "vctk_rtvc_p260_00000.mp3",
)
# every 10th of the 139 train-clean-100 files sorted by name (index 5, 15, ...), written out: held
# out by name, whatever else is in the folder
_EVAL_LIBRISPEECH = (
    "librispeech_1246-124548-0000.flac",
    "librispeech_1867-148436-0000.flac",
    "librispeech_2196-170151-0000.flac",
    "librispeech_2764-36616-0000.flac",
    "librispeech_3214-167602-0000.flac",
    "librispeech_3664-11714-0000.flac",
    "librispeech_405-130894-0000.flac",
    "librispeech_446-123501-0000.flac",
    "librispeech_5192-19396-0000.flac",
    "librispeech_6000-55211-0000.flac",
    "librispeech_6476-57446-0000.flac",
    "librispeech_7312-92432-0000.flac",
    "librispeech_8226-274369-0000.flac",
    "librispeech_887-123289-0000.flac",
)

_EVAL_NOISE = (
    "blanket_city.ogg",
    "blanket_coffee-shop.ogg",
    "moodist_ceiling-fan.mp3",
    "moodist_keyboard.mp3",
    "gui-project_leaves.ogg",
    "quietsleep_rain.mp3",
    "audiomentations_short_friction1.wav",
)

_EVAL_RIR = (
    "openair_spokane_womans_club_medium_hall.wav",
    "spatialaudio_rir_clap.wav",
)

# instrumental music (voice isolation): the string orchestra is held out; the songs with vocals
# (music_vocals/) are in neither side (whether a singer is the voice to keep is the user's call)
_EVAL_MUSIC = (
    "librosa_Hungarian_Dance_number_5_-_Allegro_in_F_sharp_minor_(string_orchestra).hq.ogg",
)
_AUDIO_EXT = (".wav", ".flac", ".ogg", ".mp3")


@dataclass(frozen=True)
class EvalSplit:
    """Held-out files (absolute paths), sorted."""

    speech: list[Path]
    noise: list[Path]
    rirs: list[Path]
    music: list[Path] = field(default_factory=list)


def shared_data_dir() -> Path:
    """``$HUSHBRIDGE_SHARED_DATA``, else ``../shared/data`` next to the checkout, else ``/work/shared/data``."""
    asked = os.environ.get("HUSHBRIDGE_SHARED_DATA", "")
    if asked:  # named explicitly: that folder or an error, never a silent fallback elsewhere
        if (Path(asked) / "speech").is_dir():
            return Path(asked)
        raise FileNotFoundError(f"HUSHBRIDGE_SHARED_DATA={asked!r} has no speech/ folder")
    candidates = [str(Path(__file__).resolve().parents[3] / "shared" / "data"), "/work/shared/data"]
    for c in candidates:
        if c and (Path(c) / "speech").is_dir():
            return Path(c)
    raise FileNotFoundError(f"shared data not found (tried {[c for c in candidates if c]!r}); "
                            "set HUSHBRIDGE_SHARED_DATA")


def _audio(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in _AUDIO_EXT) if folder.is_dir() else []


def _is_eval_speech(path: Path) -> bool:
    return path.name in _EVAL_SPEECH_EXTRA or path.name in _EVAL_LIBRISPEECH


def eval_split(root: str | os.PathLike | None = None) -> EvalSplit:
    """Held-out speech, noise and RIR files for evaluation (never used in training).

    Parameters
    ----------
    root : path, optional
        The shared data folder; default :func:`shared_data_dir`.
    """
    base = Path(root) if root is not None else shared_data_dir()
    return EvalSplit(
        speech=[p for p in _audio(base / "speech") if _is_eval_speech(p)],
        noise=[p for p in _audio(base / "noise") if p.name in _EVAL_NOISE],
        rirs=[p for p in _audio(base / "rir") if p.name in _EVAL_RIR],
        music=[p for p in _audio(base / "music") if p.name in _EVAL_MUSIC],
    )


def train_split(root: str | os.PathLike | None = None) -> EvalSplit:
    """The complement of :func:`eval_split`: what training may read (same layout)."""
    base = Path(root) if root is not None else shared_data_dir()
    held = eval_split(base)
    speech = _audio(base / "speech")
    return EvalSplit(
        speech=[p for p in speech if p not in held.speech],
        noise=[p for p in _audio(base / "noise") if p not in held.noise],
        rirs=[p for p in _audio(base / "rir") if p not in held.rirs],
        music=[p for p in _audio(base / "music") if p not in held.music],
    )


def paired_sets(root: str | os.PathLike | None = None) -> dict[str, list[tuple[Path, Path]]]:
    """The real paired recordings, evaluation only: ``{"vctk_denoiser": [(noisy, clean), ...], "deepfilternet": [...]}``."""
    base = Path(root) if root is not None else shared_data_dir()
    out: dict[str, list[tuple[Path, Path]]] = {"vctk_denoiser": [], "deepfilternet": []}
    vd = base / "paired_vctk_denoiser"
    for noisy in _audio(vd / "noisy"):
        clean = vd / "clean" / noisy.name
        if clean.exists():
            out["vctk_denoiser"].append((noisy, clean))
    dfn = base / "deepfilternet"
    if (dfn / "noisy_snr0.wav").exists():
        out["deepfilternet"].append((dfn / "noisy_snr0.wav", dfn / "clean_freesound_33711.wav"))
    return out
