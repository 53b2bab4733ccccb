"""Streaming ONNX runtime: one hop in, one hop out, explicit recurrent state, no allocation per hop.

The graph contract is written down in ``models/README.md``: inputs ``audio_in`` float32 ``[1, hop]``,
``state_<k>`` (fixed shapes, zeros at start) and optionally ``atten_lim_db`` ``[1]``; outputs
``audio_out`` ``[1, hop]``, ``state_<k>_out`` (same shapes) and optionally ``activity`` ``[1]`` plus any
other fixed-shape float32 outputs. Metadata ``hushbridge.sample_rate``, ``hushbridge.hop``,
``hushbridge.latency_samples`` (graph delay at the model rate), ``hushbridge.name``,
``hushbridge.version``.

:class:`StreamingModel` follows the Effect lifecycle (STYLE.md rule 1):

``StreamingModel(path)``
    Opens one onnxruntime session (CPU provider, 1 intra-op thread, 1 inter-op thread, sequential
    execution), reads the metadata and the state names and shapes from the graph and checks them.
``prepare(channels, linked=False)``
    Allocates, for every channel, two sets of state arrays (ping-pong) and binds every input and
    output once with IOBinding to preallocated arrays; then ``reset()``. ``linked``: the channels
    as one link group (a graph that can, below).
``run_hop(channel)``
    Runs one hop for ``channel`` from :attr:`audio_in` and returns :attr:`audio_out` (a view,
    overwritten by the next call). The new state lands in the other buffer of the pair and the pair
    swaps: nothing is allocated or copied.
``reset(channel=None)``
    Zeroes the state of one channel, or of all.
``latency_samples``
    The graph's delay at the model rate (metadata); the hop FIFO of an Effect adds ``hop - 1``.

Multi-channel audio runs **per channel** by default: each channel has its own state set and is
processed as an independent mono stream. A graph with a dynamic batch dimension (models/README.md)
runs all channels in one call per hop (:meth:`StreamingModel.run_all`, rows of
``audio_in``/``audio_out``); other graphs take one call per channel (:meth:`StreamingModel.run_hop`).
A graph whose network states lead with a second dynamic dimension, ``groups`` (ours do), can also
**link** the channels: ``prepare(channels, linked=True)`` makes them one group, whose network hears
their mid and treats every channel alike (one network run, a stable stereo image; the group's
states and optional outputs have one row, the channels' buffers one each).

>>> m = StreamingModel("models/denoise.onnx")            # doctest: +SKIP
>>> m.prepare(channels=2)                                 # doctest: +SKIP
>>> m.audio_in[0, :] = hop_of_audio                       # doctest: +SKIP
>>> out = m.run_hop(0)                                    # doctest: +SKIP
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hushbridge.dsp.kernels.model import all_finite
from hushbridge.errors import HushbridgeError

AUDIO_IN = "audio_in"
AUDIO_OUT = "audio_out"
ATTEN_IN = "atten_lim_db"
ACTIVITY_OUT = "activity"
META = "hushbridge."
REQUIRED_META = ("sample_rate", "hop", "latency_samples")


class ModelError(HushbridgeError, RuntimeError):
    """A model file is missing, unreadable or does not follow the streaming contract."""


class ModelNotFoundError(ModelError, FileNotFoundError):
    """The model file does not exist."""


@dataclass(frozen=True)
class ModelInfo:
    """What the graph declares: metadata plus state names and shapes."""

    path: str
    sample_rate: int
    hop: int
    latency_samples: int
    name: str
    version: str
    states: tuple[tuple[str, tuple[int, ...]], ...]  # (input name, shape); output is name + "_out"
    extra_outputs: tuple[tuple[str, tuple[int, ...]], ...]  # optional outputs, activity included
    has_atten_lim: bool
    has_activity: bool
    batched: bool = False  # dim 0 of every tensor but atten_lim_db is dynamic: one run serves all channels
    #: states and outputs whose rows are link groups, not channels (their dim 0 is named apart from
    #: audio_in's); a graph with any can link channels
    group_tensors: frozenset[str] = frozenset()

    @property
    def linkable(self) -> bool:
        return bool(self.group_tensors)


def _fixed_shape(name: str, shape: list, path: str, hop: int | None = None) -> tuple[int, ...]:
    """A graph tensor's shape as ints; a symbolic batch dim is 1 and a symbolic hop dim is ``hop``."""
    out = []
    for i, d in enumerate(shape):
        if isinstance(d, (int, np.integer)) and d > 0:
            out.append(int(d))
        elif i == 0 and len(shape) > 1:
            out.append(1)
        elif hop is not None and i == len(shape) - 1:
            out.append(hop)
        else:
            raise ModelError(f"{path}: {name!r} has a dynamic dimension {d!r} in {shape}; "
                             "the streaming contract needs fixed shapes (see models/README.md)")
    return tuple(out)


def _session_options():
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.enable_cpu_mem_arena = True
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    so.log_severity_level = 3
    return so


def inspect_model(session, path: str) -> ModelInfo:
    """Read and check the contract of an open onnxruntime session (raises ModelError)."""
    meta = dict(session.get_modelmeta().custom_metadata_map)
    missing = [k for k in REQUIRED_META if META + k not in meta]
    if missing:
        raise ModelError(f"{path}: metadata_props lacks {', '.join(META + k for k in missing)} "
                         "(see models/README.md)")
    try:
        sr, hop, lat = (int(meta[META + k]) for k in REQUIRED_META)
    except ValueError as e:
        raise ModelError(f"{path}: hushbridge.sample_rate/hop/latency_samples must be integers: {e}") from e
    if not (8000 <= sr <= 768000 and hop >= 1 and lat >= 0):
        raise ModelError(f"{path}: bad metadata sample_rate={sr} hop={hop} latency_samples={lat}")
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name: o for o in session.get_outputs()}
    for name, table, kind in ((AUDIO_IN, inputs, "input"), (AUDIO_OUT, outputs, "output")):
        if name not in table:
            raise ModelError(f"{path}: no {kind} named {name!r} (has {sorted(table)})")
    for name, t in list(inputs.items()) + list(outputs.items()):
        if t.type != "tensor(float)":
            raise ModelError(f"{path}: {name!r} is {t.type}; every tensor of the contract is float32")
    batched = not isinstance(inputs[AUDIO_IN].shape[0], (int, np.integer))
    for name in (AUDIO_IN, AUDIO_OUT):
        table = inputs if name == AUDIO_IN else outputs
        shape = _fixed_shape(name, table[name].shape, path, hop)
        if shape != (1, hop):
            raise ModelError(f"{path}: {name!r} has shape {shape}, the metadata says [1, {hop}]")
    states = []
    for name, t in inputs.items():
        if name in (AUDIO_IN, ATTEN_IN):
            continue
        if not name.startswith("state_"):
            raise ModelError(f"{path}: unexpected input {name!r}; inputs are audio_in, state_<k> and "
                             "optionally atten_lim_db")
        out_name = name + "_out"
        if out_name not in outputs:
            raise ModelError(f"{path}: state input {name!r} has no output {out_name!r}")
        shape = _fixed_shape(name, t.shape, path)
        oshape = _fixed_shape(out_name, outputs[out_name].shape, path)
        if shape != oshape:
            raise ModelError(f"{path}: {name!r} has shape {shape} but {out_name!r} has {oshape}")
        states.append((name, shape))
    if ATTEN_IN in inputs:
        shape = _fixed_shape(ATTEN_IN, inputs[ATTEN_IN].shape, path)
        if int(np.prod(shape)) != 1:
            raise ModelError(f"{path}: {ATTEN_IN!r} must hold one value, has shape {shape}")
    state_outs = {n + "_out" for n, _ in states}
    extras = []
    for name, t in outputs.items():
        if name == AUDIO_OUT or name in state_outs:
            continue
        extras.append((name, _fixed_shape(name, t.shape, path)))
    groups: set[str] = set()
    if batched:  # a dynamic batch must lead every state and output, or channels would share them
        chan_dim, group_dim = inputs[AUDIO_IN].shape[0], None
        for name, t in [(n, inputs[n]) for n, _ in states] + [(n, outputs[n]) for n, _ in extras] \
                + [(n + "_out", outputs[n + "_out"]) for n, _ in states]:
            if len(t.shape) < 2 or isinstance(t.shape[0], (int, np.integer)):
                raise ModelError(f"{path}: audio_in has a dynamic batch dimension but {name!r} has shape "
                                 f"{t.shape}; a batched graph needs it first in every state and output")
            if t.shape[0] != chan_dim:  # a link-group tensor; one such dimension at most
                if group_dim is not None and t.shape[0] != group_dim:
                    raise ModelError(f"{path}: {name!r} leads with {t.shape[0]!r}, another tensor with "
                                     f"{group_dim!r}; a graph has channels ({chan_dim!r}) and at most one "
                                     "group dimension")
                group_dim = t.shape[0]
                groups.add(name.removesuffix("_out") if name.endswith("_out") and name[:-4] in inputs else name)
        for n, _ in states:
            if (inputs[n].shape[0] == chan_dim) != (outputs[n + "_out"].shape[0] == chan_dim):
                raise ModelError(f"{path}: {n!r} and {n}_out disagree on channels or groups")
        if outputs[AUDIO_OUT].shape[0] != chan_dim:
            raise ModelError(f"{path}: audio_out leads with {outputs[AUDIO_OUT].shape[0]!r}, audio_in with {chan_dim!r}")
    return ModelInfo(path=path, sample_rate=sr, hop=hop, latency_samples=lat,
                     name=meta.get(META + "name", Path(path).stem), version=meta.get(META + "version", ""),
                     states=tuple(states), extra_outputs=tuple(extras), has_atten_lim=ATTEN_IN in inputs,
                     has_activity=ACTIVITY_OUT in outputs, batched=batched, group_tensors=frozenset(groups))


_POOL_MAX = 4  # idle sessions kept per model file
_pool: dict[tuple, list[tuple[Any, ModelInfo, set[int]]]] = {}
_pool_lock = threading.Lock()


def _session_key(path: str) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (os.path.realpath(path), st.st_mtime_ns, st.st_size)  # a rewritten file is another model


def _take_session(path: str) -> tuple[tuple, Any, ModelInfo, set[int]] | None:
    """An idle session of ``path`` left by a model that is gone (with the row counts it has run
    warm with), or None."""
    key = _session_key(path)
    with _pool_lock:
        idle = _pool.get(key)
        if idle:
            session, info, warmed = idle.pop()
            return key, session, info, warmed
    return None


def _give_session(key: tuple, session: Any, info: ModelInfo, warmed: set[int]) -> None:
    with _pool_lock:
        idle = _pool.setdefault(key, [])
        if len(idle) < _POOL_MAX:
            idle.append((session, info, warmed))


class StreamingModel:
    """A streaming ONNX model following the hushbridge contract; see the module docstring.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.onnx`` file.

    Attributes
    ----------
    info : ModelInfo
        Sample rate, hop, latency, states and optional I/O declared by the graph.
    audio_in : ndarray
        float32 ``[1, hop]``: write the next hop here before :meth:`run_hop` (shared by channels).
    audio_out : ndarray
        float32 ``[1, hop]``: the result of the latest :meth:`run_hop`.
    atten_lim_db : ndarray or None
        float32 ``[1]`` bound to the graph's ``atten_lim_db`` input when it has one.
    extras : list of dict
        Per channel, the optional outputs (``activity``, ``gains``...) as preallocated arrays.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise ModelNotFoundError(f"model file not found: {path}")
        try:
            import onnxruntime as ort
        except ImportError as e:  # pragma: no cover - a hard dependency
            raise ModelError(f"onnxruntime is needed to run {path}: {e}") from e
        self._pool_key: tuple | None = None
        #: batch sizes (rows) this session has already run warm with: its first runs at a new
        #: shape are slow and allocate, so the effect runs them in prepare, once per session
        self.warmed: set[int] = set()
        pooled = _take_session(path)
        if pooled is not None:
            self._pool_key, self.session, self.info, self.warmed = pooled
        else:
            try:
                self.session = ort.InferenceSession(path, sess_options=_session_options(),
                                                    providers=["CPUExecutionProvider"])
            except Exception as e:  # noqa: BLE001 - onnxruntime raises its own unrelated classes
                raise ModelError(f"cannot load {path}: {e}") from e
            self.info = inspect_model(self.session, path)
            self._pool_key = _session_key(path)
        self._ort = ort
        self.channels = 0
        self.linked = False
        hop = self.info.hop
        self.audio_in = np.zeros((1, hop), dtype=np.float32)
        self.audio_out = np.zeros((1, hop), dtype=np.float32)
        self.atten_lim_db = np.zeros(1, dtype=np.float32) if self.info.has_atten_lim else None
        self.extras: list[dict[str, np.ndarray]] = []
        self._bindings: list[list] = []
        self._phase: list[int] = []
        self._state_sets: list[list[list[np.ndarray]]] = []
        self._flat: list[list[list[np.ndarray]]] = []
        # The public run_with_iobinding() asks RunOptions for a WebGPU key and pays for a C++
        # exception when it is absent (~0.1-0.3 ms per call); with run_options=None it does not.
        # Where the binding layer is reachable, call it directly (no Python wrapper per hop).
        inner = getattr(self.session, "_sess", None)
        self._direct = inner.run_with_iobinding if inner is not None else None

    def __del__(self) -> None:
        # the session goes back to the pool: the next model of this file (a preset loaded live)
        # skips the ~100 ms of session creation that holds the GIL and starves the audio thread
        try:
            if self._pool_key is not None:
                _give_session(self._pool_key, self.session, self.info, self.warmed)
                self._pool_key = None
        except Exception:  # noqa: BLE001 - interpreter shutdown: nothing to keep
            pass

    # -- contract ----------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return self.info.sample_rate

    @property
    def hop(self) -> int:
        return self.info.hop

    @property
    def latency_samples(self) -> int:
        """The graph's own delay at the model rate (metadata ``hushbridge.latency_samples``)."""
        return self.info.latency_samples

    def __repr__(self) -> str:
        i = self.info
        return (f"<StreamingModel {i.name} {i.version} {i.sample_rate} Hz hop={i.hop} "
                f"latency={i.latency_samples} states={len(i.states)} channels={self.channels}>")

    def prepare(self, channels: int, linked: bool = False) -> None:
        """Allocate and bind per-channel state (two sets each, swapped after every hop); reset.
        ``linked``: all channels one link group (needs :attr:`ModelInfo.linkable`)."""
        if not isinstance(channels, (int, np.integer)) or channels < 1:
            raise ValueError(f"channels must be a positive int, got {channels!r}")
        linked = bool(linked) and channels > 1
        if linked and not self.info.linkable:
            raise ModelError(f"{self.info.path}: this graph cannot link channels (no state leads with a "
                             "groups dimension; see models/README.md): prepare it per channel")
        if channels == self.channels and linked == self.linked:
            self.reset()
            return
        self.linked = linked
        if self.info.batched:
            self._prepare_batched(int(channels))
            return
        self._bind_io(1)
        self.extras, self._bindings, self._phase, self._state_sets, self._flat = [], [], [], [], []
        for _ in range(channels):
            sets, extras, pair = self._bind_states(1)
            self._bindings.append(pair)
            self._phase.append(0)
            self._state_sets.append(sets)
            self._flat.append([[a.reshape(-1) for a in s] for s in sets])
            self.extras.append(extras)
        self.channels = int(channels)
        self.reset()

    def _prepare_batched(self, channels: int) -> None:
        """One binding pair for all channels: every array is ``[channels, ...]`` (a group tensor
        ``[1, ...]`` when linked); channel ``c``'s state, extras and ``_flat`` entries are views
        of row ``c`` (of the group's row)."""
        self._bind_io(channels)
        sets, extras, pair = self._bind_states(channels)
        grouped = [name in self.info.group_tensors for name, _ in self.info.states]

        def row(c: int, is_group: bool) -> int:
            return 0 if self.linked and is_group else c

        self._bindings = [pair]
        self._phase = [0]
        self._state_sets = [[[a[row(c, g):row(c, g) + 1] for a, g in zip(s, grouped)] for s in sets]
                            for c in range(channels)]
        self._flat = [[[a[row(c, g)].reshape(-1) for a, g in zip(s, grouped)] for s in sets]
                      for c in range(channels)]
        self.extras = [{name: arr[row(c, name in self.info.group_tensors):][:1] for name, arr in extras.items()}
                       for c in range(channels)]
        self.channels = channels
        self.reset()

    def _bind_io(self, rows: int) -> None:
        """Fresh ``audio_in``/``audio_out`` of ``rows`` rows as OrtValues (kept alive in ``_keep``:
        the OrtValues borrow the arrays' memory)."""
        ov = self._ort.OrtValue.ortvalue_from_numpy
        self.audio_in = np.zeros((rows, self.info.hop), dtype=np.float32)
        self.audio_out = np.zeros((rows, self.info.hop), dtype=np.float32)
        atten = ov(self.atten_lim_db) if self.atten_lim_db is not None else None
        self._io_values = (ov(self.audio_in), ov(self.audio_out), atten)
        self._keep = list(self._io_values)

    def _bind_states(self, rows: int) -> tuple[list[list[np.ndarray]], dict[str, np.ndarray], list]:
        """Two state sets and the extras (``rows`` rows each) and the two bindings that read one
        set and write the other (ping-pong)."""
        ov = self._ort.OrtValue.ortvalue_from_numpy
        a_in, a_out, atten = self._io_values

        def shaped(name: str, shape: tuple[int, ...]) -> tuple[int, ...]:  # a fixed graph keeps its own shapes
            if not self.info.batched:
                return shape
            return (1 if self.linked and name in self.info.group_tensors else rows,) + shape[1:]

        sets = [[np.zeros(shaped(name, shape), dtype=np.float32) for name, shape in self.info.states]
                for _ in range(2)]
        extras = {name: np.zeros(shaped(name, shape), dtype=np.float32) for name, shape in self.info.extra_outputs}
        pair = []
        for phase in (0, 1):
            b = self.session.io_binding()
            b.bind_ortvalue_input(AUDIO_IN, a_in)
            b.bind_ortvalue_output(AUDIO_OUT, a_out)
            if atten is not None:
                b.bind_ortvalue_input(ATTEN_IN, atten)
            for k, (name, _) in enumerate(self.info.states):
                src, dst = ov(sets[phase][k]), ov(sets[1 - phase][k])
                self._keep += [src, dst]
                b.bind_ortvalue_input(name, src)
                b.bind_ortvalue_output(name + "_out", dst)
            for name, arr in extras.items():
                v = ov(arr)
                self._keep.append(v)
                b.bind_ortvalue_output(name, v)
            pair.append(b._iobinding if self._direct is not None and hasattr(b, "_iobinding") else b)
        return sets, extras, pair

    def reset(self, channel: int | None = None) -> None:
        """Zero the state of ``channel`` (or of every channel; linked, a channel's reset is its
        group's: they share the network's state). Real-time safe."""
        chans = range(self.channels) if channel is None or self.linked else (channel,)
        for c in chans:  # a batched graph's channels are row views: zeroing them zeroes the rows
            for s in self._state_sets[c]:
                for arr in s:
                    arr.fill(0.0)
            for arr in self.extras[c].values():
                arr.fill(0.0)
            if not self.info.batched:
                self._phase[c] = 0
        if self.info.batched and (channel is None or self.linked):
            self._phase[0] = 0  # one phase for all channels: only a full reset restarts it

    def run_hop(self, channel: int = 0) -> np.ndarray:
        """Run one hop of :attr:`audio_in` through ``channel``'s state; return :attr:`audio_out`.
        A batched graph runs every channel at once here (rows of :attr:`audio_in`), whatever
        ``channel`` says; see :meth:`run_all`."""
        if self.info.batched:
            return self.run_all()
        p = self._phase[channel]
        b = self._bindings[channel][p]
        if self._direct is not None and not isinstance(b, self._ort.IOBinding):
            self._direct(b, None)
        else:
            self.session.run_with_iobinding(b, None)
        self._phase[channel] = 1 - p
        return self.audio_out

    def run_all(self) -> np.ndarray:
        """Batched graphs: one hop for every channel, row ``c`` of :attr:`audio_in` in and of
        :attr:`audio_out` out. Other graphs: channel by channel, each reading and writing its row
        (``audio_in``/``audio_out`` are ``[1, hop]`` there, so only one channel fits: use
        :meth:`run_hop`)."""
        if not self.info.batched:
            raise ModelError(f"{self.info.path}: run_all() needs a graph with a dynamic batch dimension")
        p = self._phase[0]
        b = self._bindings[0][p]
        if self._direct is not None and not isinstance(b, self._ort.IOBinding):
            self._direct(b, None)
        else:
            self.session.run_with_iobinding(b, None)
        self._phase[0] = 1 - p
        return self.audio_out

    def _current(self, channel: int) -> int:
        return self._phase[0] if self.info.batched else self._phase[channel]

    def state(self, channel: int = 0) -> list[np.ndarray]:
        """The current state arrays of ``channel`` (the ones the next hop reads)."""
        return self._state_sets[channel][self._current(channel)]

    def state_finite(self, channel: int = 0) -> bool:
        """Whether every state value of ``channel`` is finite (uses no temporary arrays)."""
        for arr in self._flat[channel][self._current(channel)]:
            if not all_finite(arr):
                return False
        return True


def linked_path(path: str | os.PathLike) -> Path:
    """Where the link-group graph of the per-channel graph ``path`` lives: ``<stem>.linked.onnx``
    beside it (the shipped models have one; a graph that links by itself needs none)."""
    path = Path(path)
    return path.with_name(path.name.removesuffix(".onnx") + ".linked.onnx")


def default_model_path(name: str = "denoise.onnx") -> Path:
    """The shipped model ``name`` inside the ``hushbridge.models`` package (may not exist)."""
    from importlib.resources import files

    return Path(str(files("hushbridge.models") / name))
