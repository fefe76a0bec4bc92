"""Choosing where a model runs: TensorRT, then CUDA, then the CPU, falling back on failure.

On a Jetson the onnxruntime build has TensorRT and CUDA providers, but either can fail to
start a session: the TensorRT engine build runs out of memory, a CUDA context cannot be
made after a GPU fault, a library is missing after an update. The agent must still run
the model, slower, on the CPU, and must say why it did, so the ground can see a board
that silently lost its GPU.

onnxruntime fails in two ways, and :func:`open_session` catches both:

- it raises (an unknown provider, a provider whose initialisation throws). We pass
  ``enable_fallback=0`` so it raises to us instead of printing "EP Error" on stdout
  and retrying on its own;
- it warns and quietly builds the session without the provider (a provider not in this
  build). We look at ``session.get_providers()[0]`` and count that as a failure too.

Each attempt asks for the provider followed by the rest of the list, as onnxruntime
expects (``[TensorRT, CUDA, CPU]``): nodes TensorRT cannot take run on CUDA, then CPU.

Not thread-safe (warnings are caught process-wide while a session is created): one open at a
time. The worker makes each on a thread of its own, so that it answers its watchdog meanwhile
(flight/compute/opening.py), and waits for it before anything else.

Weights the worker owns (:func:`owned_weights_options`): every initializer handed to onnxruntime
as an ``OrtValue`` over a numpy array the caller keeps (``SessionOptions.add_initializer``), so
that the weight scrubber (flight/compute/scrub.py) checks and repairs the very memory the CPU
execution provider computes from. Two onnxruntime habits would make it compute from copies
instead, and both are turned off for such sessions:

- pre-packing: the CPU kernels of Gemm/MatMul/Conv copy their weights into a packed layout at
  session start (``session.disable_prepacking`` = ``1``,
  onnxruntime_session_options_config_keys.h, kOrtSessionOptionsConfigDisablePrepacking);
- layout optimisation (level ``all``): on x86 the NCHWc transformer rewrites Conv weights into
  new, reordered initializers. Measured on the shipped model (onnxruntime 1.32, x86): at level
  ``all`` a change to any Conv weight never reached the output; at ``extended`` a change to any
  initializer did, so owned-weight sessions run at ``extended``.

The price (one PC core, batch 64): none on the shipped model (``extended`` without pre-packing
ran 1.29x the default session: its tensors are too small for the NCHWc reorder to pay), but a
model of large MatMul layers (4 x 1024 x 1024) ran at 0.58x, its GEMM kernels being fast only on
packed weights. The parameter ``weights_scrub`` turns owned weights off for such models.

What this does not cover, said plainly: a GPU provider (CUDA, TensorRT) copies the weights to
device memory (on a Jetson the same DRAM, but another buffer) and computes from that copy, and
TensorRT builds its own engine from them; the scrubber then checks host buffers nothing computes
from. Constants that a graph optimisation derives from a weight (a folded Transpose, a fused
BatchNorm) are new buffers too: :func:`unread_buffers` finds them on a probe, and the worker
then opens the model with no graph optimisation, or does not claim ``scrubbed``. The worker
claims ``scrubbed`` protection only for sessions on the CPU provider.
"""

from __future__ import annotations

import functools
import re
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import onnxruntime as ort

from flight.compute.arithmetic import tf32_allowed

DISABLE_PREPACKING = "session.disable_prepacking"
"""Session config key (onnxruntime_session_options_config_keys.h): "1" keeps kernels from copying weights."""
OWNED_WEIGHTS_OPTIMIZATION = "extended"
"""The graph optimisation level of owned-weight sessions: the highest that computes from the owned buffers."""

TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
PREFERENCE = (TENSORRT, CUDA, CPU)
"""Fastest first. CPU is always tried last whatever the caller asks for: it cannot be missing."""
GPU_PROVIDERS = (TENSORRT, CUDA)
"""Providers whose Conv/MatMul may round operands to TF32 (flight/compute/abft.py: PRECISIONS)."""

_OPTIMIZATION = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


RUN_REFUSED: tuple[type[BaseException], ...] = tuple(
    getattr(ort.capi.onnxruntime_pybind11_state, n) for n in ("Fail", "InvalidArgument", "RuntimeException"))
"""What ``InferenceSession.run`` raises when a kernel refuses its inputs: pybind11 exceptions, not
RuntimeError. Upsets in a model's integer constants (a shape, an axis) end there."""


class SessionError(RuntimeError):
    """No provider, not even the CPU, could open the model; ``reasons`` has one line per attempt."""

    def __init__(self, reasons: list[str]):
        self.reasons = reasons
        super().__init__("no execution provider could open the model: " + "; ".join(reasons))

    @property
    def model_reason(self) -> str:
        """What is wrong with the model itself: the CPU's refusal (tried last, in every build), without the
        providers before it (found in audit: a reason cut to fit an event kept only that TensorRT and CUDA were
        not in the build, never the opset onnxruntime refused); every reason where the CPU gave none."""
        prefix = f"{CPU}: session creation failed: "
        return next((r[len(prefix):] for r in reversed(self.reasons) if r.startswith(prefix)), "; ".join(self.reasons))


class OpenedSession(NamedTuple):
    """What :func:`open_session` returns; unpacks as ``session, provider, fallbacks``."""

    session: ort.InferenceSession
    provider: str
    fallbacks: list[str]  # one line per provider tried or skipped before ``provider``, saying why


def session_options_for(
    threads: int | None = None,
    *,
    optimization: str = "all",
    log_severity: int = 3,
) -> ort.SessionOptions:
    """Session options for the board: ``threads`` intra-op threads, one inter-op thread.

    ``threads=None`` lets onnxruntime use one per physical core. On a Jetson under a
    power cap fewer threads can be faster and cooler: the agent passes its own number.
    Sequential execution: the models are small chains, and parallel branches would only
    add threads to contend for the same cores. ``log_severity`` 3 keeps onnxruntime's own
    log to errors (0 verbose ... 4 fatal); :func:`open_session` reports fallbacks itself.
    """
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive int or None (onnxruntime's default), got {threads!r}")
    if optimization not in _OPTIMIZATION:
        raise ValueError(f"optimization must be one of {', '.join(_OPTIMIZATION)}, got {optimization!r}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or 0  # 0: onnxruntime's default
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = _OPTIMIZATION[optimization]
    options.log_severity_level = log_severity
    return options


class NchwcLayout(NamedTuple):
    """What onnxruntime's CPU provider does at level ``all`` (:func:`nchwc_layout`)."""

    convs_blocked: bool  # it rewrites Convs to its blocked NCHWc layout
    block: int  # the channels of one block, where a pooling of whole blocks keeps the layout; else 0


def _nchwc_answer(optimised: Any, blocks: tuple[int, ...]) -> NchwcLayout:
    """:func:`nchwc_layout`'s answer from the probe model optimised (pure): a Conv of each of ``blocks``
    output channels, each followed by a GlobalAveragePool of output ``m<channels>``."""
    if not any(node.domain == "com.microsoft.nchwc" for node in optimised.graph.node):
        return NchwcLayout(False, 0)
    plain = {node.output[0] for node in optimised.graph.node if node.op_type == "GlobalAveragePool"
             and node.domain in ("", "ai.onnx") and node.output}  # poolings the transformer left as they were
    return NchwcLayout(True, min((c for c in blocks if f"m{c}" not in plain), default=0))


@functools.lru_cache(maxsize=1)
def nchwc_layout() -> NchwcLayout:
    """Whether this onnxruntime's CPU provider rewrites Convs to its blocked NCHWc layout at level
    ``all`` (its x86 builds do; its Arm builds only where made with the NEON NCHWc option, off by
    default), and its block: asked of onnxruntime itself, once a process. One model of a Conv of each
    of the checksum pass's blocks of channels (:data:`flight.compute.abft.NCHWC_BLOCKS`), each followed
    by a GlobalAveragePool, is optimised and read back (a few milliseconds): every Conv is blocked
    where the layout is used (its output padded to whole blocks), a pooling only where its channels are
    whole blocks, so the smallest such is the block (8 on AVX2, 16 on AVX-512). The checksum pass reads
    a tensor kept blocked with a pooling that takes that layout (:func:`flight.compute.abft.protect`,
    ``nchwc``)."""
    from onnx import TensorProto, helper, load, numpy_helper  # the agent imports onnx anyway (the checksum pass)

    from flight.compute.abft import NCHWC_BLOCKS

    nodes, weights, outputs = [], [], []
    for c in NCHWC_BLOCKS:
        weights.append(numpy_helper.from_array(np.ones((c, 8, 3, 3), np.float32), f"w{c}"))
        nodes += [helper.make_node("Conv", ["x", f"w{c}"], [f"y{c}"], name=f"conv{c}", pads=[1, 1, 1, 1]),
                  helper.make_node("GlobalAveragePool", [f"y{c}"], [f"m{c}"], name=f"mean{c}")]
        outputs.append(helper.make_tensor_value_info(f"m{c}", TensorProto.FLOAT, [1, c, 1, 1]))
    graph = helper.make_graph(nodes, "probe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 8, 8])],
                              outputs, weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    try:
        with tempfile.TemporaryDirectory(prefix="sunlit-nchwc-") as scratch:
            options = session_options_for(1, optimization="all")
            options.optimized_model_filepath = str(Path(scratch) / "optimised.onnx")
            ort.InferenceSession(model.SerializeToString(), options, providers=[CPU])
            optimised = load(options.optimized_model_filepath)
    except Exception:  # noqa: BLE001 - no scratch space, or a build that cannot say: plain sums, right on every layout
        return NchwcLayout(False, 0)
    return _nchwc_answer(optimised, NCHWC_BLOCKS)


def cpu_blocks_conv_outputs() -> bool:
    """Whether this onnxruntime's CPU provider rewrites Convs to its blocked NCHWc layout at level
    ``all`` (:func:`nchwc_layout`)."""
    return nchwc_layout().convs_blocked


def cpu_nchwc_block() -> int:
    """The channels of one block of that layout (8 on AVX2, 16 on AVX-512), or 0 where Convs are not
    blocked or no pooling keeps the layout (:func:`nchwc_layout`)."""
    return nchwc_layout().block


def checksum_layout_nchwc(optimization: str) -> int:
    """The checksum pass's ``nchwc`` for a CPU session at graph optimisation ``optimization``: the block of
    onnxruntime's NCHWc layout (:func:`cpu_nchwc_block`) at ``all``, else 0 (plain sums)."""
    return cpu_nchwc_block() if optimization == "all" else 0


def owned_weights_options(
    initializers: Mapping[str, Any],
    threads: int | None = None,
    *,
    log_severity: int = 3,
    optimization: str = OWNED_WEIGHTS_OPTIMIZATION,
) -> tuple[ort.SessionOptions, tuple[Any, ...]]:
    """Session options whose initializers are ``initializers`` (name -> numpy array), used in place.

    Returns the options and the ``OrtValue`` objects made over the arrays: keep both, and the
    arrays, alive for as long as the session (onnxruntime does not own them). Pre-packing is off
    and the optimisation level is :data:`OWNED_WEIGHTS_OPTIMIZATION`, so on the CPU provider a
    change to an array (a bit flip, its repair) is a change to what the session computes; the
    module docstring says what is not covered. Each array must be C-contiguous and writable.
    """
    options = session_options_for(threads, optimization=optimization, log_severity=log_severity)
    options.add_session_config_entry(DISABLE_PREPACKING, "1")
    values = []
    for name, array in initializers.items():
        if not (array.flags.c_contiguous and array.flags.writeable):
            raise ValueError(f"initializer {name!r}: the buffer must be C-contiguous and writable")
        value = ort.OrtValue.ortvalue_from_numpy(array)  # a view of the array's memory on the CPU, no copy
        options.add_initializer(name, value)
        values.append(value)
    return options, tuple(values)


_PROBE_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16}


def unread_buffers(session: ort.InferenceSession, arrays: Mapping[str, np.ndarray],
                   probe: Mapping[str, np.ndarray] | None = None,
                   between_runs: Callable[[], None] | None = None) -> list[str] | None:
    """The ``arrays`` (an owned-weight session's initializers) that the session does not compute
    from: a graph optimisation folded them into constants of its own at session start (a Conv
    followed by BatchNormalization or by a Mul by a constant, a Transpose of a weight, a Cast of
    an integer weight), or a kernel copied them when it was made, so a flip in them changes
    nothing and scrubbing them checks memory nothing reads.

    Each is moved twice while the session runs on ``probe`` (a feed; a model with range checks
    needs one of its reference inputs, which pass them, else no move of a bound changes its flag),
    else on normal noise (batch 1, other sizes not fixed by the model 1, then 32: a 3x3 Conv
    refuses a 1x1 image): a float up and then down by more than its own size, an integer weight set
    to 0 where it is not and 1 where it is, then its lowest bit flipped, a bool negated (integer
    operands, :data:`SMALL_OPERAND`, are not moved); one whose moves change none of
    the outputs (nor make the run fail) is unread. Restored bit for bit after. None where no
    probe can run (an input of a type noise cannot stand for, sizes neither guess fits): nothing
    is known then, and nothing may be claimed on it. Not found: a buffer read by one node and
    folded for another (a weight shared by a fused Conv and an unfused one) counts as read.

    It runs the model once or twice per buffer, seconds for a deep model (a chain of 40 3x3 Convs
    took 12.6 s here): ``between_runs`` is called after each run, so a caller with a watchdog to
    answer can (the worker answers the agent's pings there; found in review: silent past
    ``compute_watchdog_s``, it was killed at every try to open such a model).
    """
    tick = between_runs or (lambda: None)
    quiet = ort.RunOptions()
    quiet.log_severity_level = 4  # the moves make some runs fail on purpose: not errors to log
    before = feed = None
    for size in (1, 32):
        rng = np.random.default_rng(0)
        feed = dict(probe or {})
        for item in session.get_inputs():
            if item.name in feed:
                continue
            kind = _PROBE_TYPES.get(item.type)
            if kind is None:
                return None
            shape = [d if isinstance(d, int) and d > 0 else (1 if axis == 0 else size) for axis, d in enumerate(item.shape)]
            feed[item.name] = rng.standard_normal(shape).astype(kind)
        try:
            before = session.run(None, feed, quiet)
            break
        except Exception:  # noqa: BLE001 - onnxruntime raises several kinds for a probe it cannot take
            before = None
    if before is None:
        return None
    unread = []
    for name, array in arrays.items():
        if array.size == 0:
            continue
        saved = array.copy()
        moves = _moves(saved)
        read = False
        try:
            for moved in moves:
                array[...] = moved
                try:
                    after = session.run(None, feed, quiet)
                except Exception:  # noqa: BLE001 - it failed on the change: it reads the buffer
                    read = True
                    break
                finally:
                    tick()
                if any(not _same(a, b) for a, b in zip(before, after)):
                    read = True
                    break
        finally:
            np.copyto(array, saved)
        if not read and moves:
            unread.append(name)
    return unread


SMALL_OPERAND = 64
"""Integer and bool buffers of at most this many elements are operands (shapes, axes, indices,
slice bounds), not weights: :func:`unread_buffers` does not move them. Some leave the output alone
on the probe whatever they hold (Unsqueeze's axis 0 or 1 on a batch of 1), so an unchanged output
says nothing of folding; onnxruntime reads such operands where it decides, at session start for
some kernels. Integer weights (a quantised layer's) are larger, and are probed."""


def _moves(saved: np.ndarray) -> list[np.ndarray]:
    """The values :func:`unread_buffers` puts in a buffer in turn (none for strings and small
    integer operands: not weights)."""
    kind = saved.dtype.kind
    if kind in "fc":
        with np.errstate(over="ignore", invalid="ignore"):
            return [saved + sign * (np.abs(saved) + 1.0) for sign in (1.0, -1.0)]
    if saved.size <= SMALL_OPERAND:
        return []
    if kind in "iu":  # 0 where it is not and 1 where it is, then its lowest bit flipped
        bits = saved.view(f"u{saved.itemsize}")
        return [(saved == 0).astype(saved.dtype), (bits ^ bits.dtype.type(1)).view(saved.dtype)]
    if kind == "b":
        return [~saved]
    return []


def _same(a: Any, b: Any) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc" and b.dtype.kind in "fc"))


def providers_to_try(preferred: Sequence[str] | None = None) -> list[str]:
    """``preferred`` (default :data:`PREFERENCE`) without repeats, with the CPU appended if absent."""
    if isinstance(preferred, str):  # found in audit: a bare name was tried letter by letter, each "not in this build"
        raise TypeError(f"preferred is a sequence of provider names, got the one string {preferred[:80]!r}: "
                        "pass it as a list")
    order: list[str] = []
    for name in PREFERENCE if preferred is None else preferred:
        if not isinstance(name, str):
            raise TypeError(f"provider names are strings, got {name!r}; pass options in provider_options")
        if name not in order:
            order.append(name)
    if CPU not in order:
        order.append(CPU)
    return order


def abft_precision(preferred: Sequence[str] | None = None, available: Sequence[str] | None = None,
                   environ: Mapping[str, str] | None = None) -> str:
    """The checksum pass's precision: "tf32" if a GPU may run the model and TF32 is allowed in this
    process (:func:`tf32_allowed`; on Orin TF32 is on unless forbidden), else "fp32"."""
    # A GPU session that fails to open falls back to the CPU with this model: a looser check there, no false alarm.
    have = ort.get_available_providers() if available is None else available
    gpu = any(p in GPU_PROVIDERS and p in have for p in providers_to_try(preferred))
    return "tf32" if gpu and tf32_allowed(environ) else "fp32"


def open_session(
    model: bytes | Path | str,
    preferred: Sequence[str] | None = None,
    threads: int | None = None,
    *,
    available: Sequence[str] | None = None,
    options: ort.SessionOptions | None = None,
    provider_options: Mapping[str, Mapping[str, Any]] | None = None,
    attempt: Callable[[str], None] | None = None,
) -> OpenedSession:
    """Open ``model`` on the first provider of ``preferred`` that works; ``(session, provider, fallbacks)``.

    ``model`` is the ONNX bytes (prefer the bytes a :class:`~flight.compute.store.ModelStore`
    verified) or a path. ``preferred`` is the order to try (default TensorRT, CUDA, CPU);
    the CPU is added last if missing. A provider not in ``available`` (default
    ``onnxruntime.get_available_providers()``) is skipped without an attempt; tests pass
    ``available`` to make onnxruntime itself refuse. ``provider_options`` maps a provider
    name to its options, e.g. ``{"TensorrtExecutionProvider": {"trt_engine_cache_enable":
    "True", "trt_engine_cache_path": "/var/lib/sunlit/trt"}}`` (without an engine cache
    TensorRT rebuilds its engine, minutes on a Jetson, on every start). ``attempt(name)`` is called
    before each provider's attempt, so that a caller can write down which one never returned
    (flight/compute/opening.py).

    Raises :class:`SessionError` if even the CPU fails (then the model itself is bad).
    """
    source = str(model) if isinstance(model, (str, Path)) else model
    have = list(ort.get_available_providers() if available is None else available)
    order = providers_to_try(preferred)
    options = options if options is not None else session_options_for(threads)
    provider_options = provider_options or {}
    fallbacks: list[str] = []
    for i, name in enumerate(order):
        if name not in have:
            fallbacks.append(f"{name}: not in this onnxruntime build (available: {', '.join(have) or 'none'})")
            continue
        rest = [p for p in order[i:] if p in have]
        request = [(p, dict(provider_options.get(p, {}))) for p in rest]
        if attempt is not None:
            attempt(name)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                session = ort.InferenceSession(source, sess_options=options, providers=request, enable_fallback=0)
            except Exception as exc:  # onnxruntime's own types (Fail, InvalidProtobuf, ...) derive from Exception
                why = f"{type(exc).__name__}: {_one_line(exc)}"
                fallbacks.append(f"{name}: session creation failed: {why}{_notes(caught)}")
                continue
        got = session.get_providers()
        if got and got[0] == name:
            return OpenedSession(session, name, fallbacks)
        fallbacks.append(f"{name}: onnxruntime dropped it and chose {got[0] if got else 'nothing'}{_notes(caught)}")
    raise SessionError(fallbacks)


def _one_line(exc: BaseException) -> str:
    return ort_message(exc)[:300]


_ORT_STATUS = re.compile(r"\[ONNXRuntimeError\] : \d+ : \w+ : ")
_ORT_SOURCE = re.compile(r"(?<!\S)\S+\.(?:h|hpp|cc|cpp|cu):\d+ ")
_CPP_NAME = re.compile(r"[\w:<>,*&~\s]*::[\w:<>,*&~\s]*")


def ort_message(exc: BaseException) -> str:
    """onnxruntime's error on one line, without what it puts before the message: its status code (the
    exception's type says it) and the C++ source line and function signature it came from, two hundred
    characters and more (found in audit: a reason cut to fit an event or a reply kept the signature and lost
    the message, the opset or IR version a model was refused for)."""
    text = _ORT_STATUS.sub("", " ".join(str(exc).split()))
    where = _ORT_SOURCE.search(text)
    if where is None:
        return text
    rest, depth = text[where.end():], 0
    opened = rest.find("(")
    if opened <= 0 or not _CPP_NAME.fullmatch(rest[:opened]):
        return text
    for i in range(opened, len(rest)):
        depth += {"(": 1, ")": -1}.get(rest[i], 0)
        if depth == 0:
            message = re.sub(r"^(?: const)? ?", "", rest[i + 1:])
            return text[:where.start()] + message if message else text
    return text


def _notes(caught: list[warnings.WarningMessage]) -> str:
    messages = [_one_line(w.message) for w in caught]  # type: ignore[arg-type]
    return f" (onnxruntime warned: {' | '.join(messages)})" if messages else ""
