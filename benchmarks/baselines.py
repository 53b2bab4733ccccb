"""Baseline denoisers for the benchmarks, each as ``process(x) -> y`` on a mono float32 signal at its
own rate, with its latency, run the way each is meant to stream.

- RNNoise (``pyrnnoise``'s librnnoise, called frame by frame through ctypes): 48 kHz, 480-sample
  frames, samples in int16 range; output delayed by 960 samples (measured on this build).
- DTLN (``../shared/anchors/dtln/model_{1,2}.onnx``): 16 kHz, block 512, shift 128, the standard
  real-time loop (rfft magnitude -> model 1 mask -> irfft -> model 2 -> overlap-add); delay 384.
- GTCRN (``../shared/anchors/gtcrn/gtcrn_simple.onnx``): 16 kHz, sqrt-Hann STFT 512 / hop 256,
  streaming with its caches; delay 256.
- noisereduce: spectral gating (non-stationary), offline, no delay.
- WPE (``nara_wpe``): weighted prediction error dereverberation, offline (it sees the whole file,
  so it is stronger than any streaming method could be): 16 kHz, STFT 512 / 128, 10 taps, delay 3,
  5 iterations; no delay.
"""
from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared"
ANCHORS = next((p for p in (SHARED / "anchors", Path("/work/shared/anchors")) if p.is_dir()), SHARED / "anchors")


def _session(path: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


class RNNoise:
    sample_rate = 48000
    latency = 960  # measured (cross-correlation on clean speech): this librnnoise build adds a frame
    name = "rnnoise"

    def __init__(self) -> None:
        from pyrnnoise import rnnoise as rn

        self._rn = rn
        self.frame = rn.FRAME_SIZE

    def process(self, x: np.ndarray) -> np.ndarray:
        rn = self._rn
        st = rn.create()
        try:
            n = len(x) // self.frame * self.frame
            buf = np.zeros(self.frame, np.float32)
            ptr = buf.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            y = np.zeros(len(x), np.float32)
            for i in range(0, n, self.frame):
                buf[:] = x[i:i + self.frame] * 32768.0
                rn.lib.rnnoise_process_frame(st, ptr, ptr)
                y[i:i + self.frame] = buf / 32768.0
            return y
        finally:
            rn.destroy(st)


class DTLN:
    sample_rate = 16000
    latency = 384  # block_len - block_shift
    name = "dtln"
    block_len, block_shift = 512, 128

    def __init__(self, folder: Path | None = None) -> None:
        folder = folder or ANCHORS / "dtln"
        self.m1, self.m2 = _session(folder / "model_1.onnx"), _session(folder / "model_2.onnx")
        self.n1 = [i.name for i in self.m1.get_inputs()]
        self.n2 = [i.name for i in self.m2.get_inputs()]
        self.s1_shape = self.m1.get_inputs()[1].shape
        self.s2_shape = self.m2.get_inputs()[1].shape

    def process(self, x: np.ndarray) -> np.ndarray:
        bl, bs = self.block_len, self.block_shift
        s1 = np.zeros(self.s1_shape, np.float32)
        s2 = np.zeros(self.s2_shape, np.float32)
        in_buf = np.zeros(bl, np.float32)
        out_buf = np.zeros(bl, np.float32)
        n_blocks = (len(x) - (bl - bs)) // bs
        y = np.zeros(len(x), np.float32)
        for k in range(n_blocks):
            in_buf[:-bs] = in_buf[bs:]
            in_buf[-bs:] = x[k * bs:(k + 1) * bs]
            spec = np.fft.rfft(in_buf)
            mag = np.abs(spec).astype(np.float32).reshape(1, 1, -1)
            mask, s1 = self.m1.run(None, {self.n1[0]: mag, self.n1[1]: s1})
            est = np.fft.irfft(spec * mask.reshape(-1)).astype(np.float32).reshape(1, 1, -1)
            blk, s2 = self.m2.run(None, {self.n2[0]: est, self.n2[1]: s2})
            out_buf[:-bs] = out_buf[bs:]
            out_buf[-bs:] = 0.0
            out_buf += blk.reshape(-1)
            y[k * bs:(k + 1) * bs] = out_buf[:bs]
        return y


class GTCRN:
    sample_rate = 16000
    latency = 256  # n_fft - hop
    name = "gtcrn"
    n_fft, hop = 512, 256

    def __init__(self, path: Path | None = None) -> None:
        self.sess = _session(path or ANCHORS / "gtcrn" / "gtcrn_simple.onnx")
        self.inputs = {i.name: i.shape for i in self.sess.get_inputs()}
        self.win = np.sqrt(np.hanning(self.n_fft + 1)[:-1]).astype(np.float32)

    def process(self, x: np.ndarray) -> np.ndarray:
        nf, hop, win = self.n_fft, self.hop, self.win
        caches = {k: np.zeros(s, np.float32) for k, s in self.inputs.items() if k != "mix"}
        buf = np.zeros(nf, np.float32)
        ola = np.zeros(nf, np.float32)
        y = np.zeros(len(x), np.float32)
        for k in range(len(x) // hop):
            buf[:-hop] = buf[hop:]
            buf[-hop:] = x[k * hop:(k + 1) * hop]
            spec = np.fft.rfft(buf * win)
            mix = np.stack([spec.real, spec.imag], -1).astype(np.float32).reshape(1, -1, 1, 2)
            outs = self.sess.run(None, {"mix": mix, **caches})
            enh = outs[0].reshape(-1, 2)
            for name, val in zip(list(caches), outs[1:]):
                caches[name] = val
            frame = np.fft.irfft(enh[:, 0] + 1j * enh[:, 1]).astype(np.float32) * win
            ola[:-hop] = ola[hop:]
            ola[-hop:] = 0.0
            ola += frame
            y[k * hop:(k + 1) * hop] = ola[:hop]
        return y


class NoiseReduce:
    latency = 0
    name = "noisereduce"

    def __init__(self, sample_rate: int = 16000) -> None:
        import noisereduce  # noqa: F401

        self.sample_rate = sample_rate

    def process(self, x: np.ndarray) -> np.ndarray:
        import noisereduce

        return noisereduce.reduce_noise(y=x, sr=self.sample_rate, stationary=False).astype(np.float32)


class WPE:
    latency = 0
    name = "wpe"
    sample_rate = 16000

    def __init__(self) -> None:
        import nara_wpe  # noqa: F401

    def process(self, x: np.ndarray) -> np.ndarray:
        from nara_wpe.utils import istft, stft
        from nara_wpe.wpe import wpe

        spec = stft(x[None].astype(np.float64), size=512, shift=128)  # (channels, frames, bins)
        out = wpe(spec.transpose(2, 0, 1), taps=10, delay=3, iterations=5, statistics_mode="full")
        y = istft(out.transpose(1, 2, 0), size=512, shift=128)[0]
        return np.pad(y, (0, max(0, len(x) - len(y))))[:len(x)].astype(np.float32)


def build(makers: dict, names: list[str]) -> list:
    """The systems ``names`` from ``makers`` (name -> (class, *args)), skipping with a message
    those that cannot run here; an unknown name is an error."""
    import sys

    out = []
    for n in names:
        if n not in makers:
            raise SystemExit(f"unknown system {n!r} (known: {', '.join(makers)})")
        inst, why = available(*makers[n])
        if inst is None:
            print(f"# skip {n}: {why}", file=sys.stderr)
        else:
            out.append(inst)
    return out


def available(cls, *args):
    """``(instance, None)`` or ``(None, reason)`` when the baseline cannot run here."""
    try:
        return cls(*args), None
    except Exception as e:  # noqa: BLE001 - any missing file or package means: skip with the reason
        return None, f"{cls.__name__} unavailable: {e}"


def main(argv: list[str] | None = None) -> int:
    import argparse

    argparse.ArgumentParser(description=__doc__ + "\nRun alone, it says which baselines can run here.",
                            formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    for cls in (RNNoise, DTLN, GTCRN, NoiseReduce, WPE):
        instance, why = available(cls)
        print(f"{cls.name:12s} " + (f"ready (latency {cls.latency} samples at {instance.sample_rate} Hz)"
                                    if instance is not None else f"missing: {why}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
