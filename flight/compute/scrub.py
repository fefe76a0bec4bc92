"""Weights the worker owns and checks: a model's initializers scrubbed against a voted golden copy.

A proton that flips a bit of a weight in RAM changes every result the model gives from then
on, silently. The model store checks the file's SHA-256 when it is read; this module checks the
weights in memory, where ONNX Runtime computes from them, for as long as the session lives.

What it does (pure logic: arrays and times in, repairs and counters out; no I/O, no clock):

- **Owned buffers.** :class:`WeightScrubber` holds each initializer of a loaded model as a numpy
  array of its own (:attr:`WeightScrubber.owned`), the buffers the worker hands to ONNX Runtime
  (``SessionOptions.add_initializer``, flight/compute/providers.py). Repairing one of them in
  place is repairing what the session computes with, provided the session does not compute from
  a copy: see :func:`flight.compute.providers.owned_weights_options` for the settings that
  ensure it on the CPU execution provider, and what is not covered on a GPU.
- **Golden copy, three times.** The reference values come from the model store's verified bytes
  (its SHA-256 checked at load, flight/compute/store.py) and are kept in three separate
  allocations. A repair takes the bitwise majority of the three, ``(a & b) | (a & c) | (b & c)``,
  so a flip in one golden copy is outvoted (and that copy put right with the rest); every byte
  two copies agree on is settled the same way.
- **CRC-32 per chunk.** Each tensor is cut into chunks of :data:`CHUNK_BYTES` (a chunk never
  spans two tensors); ``zlib.crc32`` of each is taken at load from the voted golden copy. A
  check compares the owned chunk's CRC with it. A CRC entry itself hit by a flip is found too:
  the chunk then disagrees with its CRC while it equals the vote, and the entry is recomputed.
- **Incremental, within a budget.** :meth:`WeightScrubber.step` checks, each call, the chunks
  owed since the last call for a full pass to take one period, round-robin, at most
  ``budget_bytes`` of them, so the worker's loop keeps its latency. With calls at least once a
  second (the worker's idle wait) and the default budget, a full pass fits the shortest period
  for models up to ``STEP_BYTES * SCRUB_PERIOD_S[SAA]`` bytes (120 MiB); past that
  :attr:`ScrubStats.behind` says so, and the worker raises SCRUB_BEHIND. Each pass also checks one of the golden copies in turn
  (pass ``p`` checks copy ``p % 3``), so the golden copies are themselves scrubbed every three
  passes at a third of the cost of checking all three every time.
  :meth:`WeightScrubber.scrub_all` checks everything now (after a result check failed).
- **Watched tensors.** Where the checksum pass runs, the weights it does not cover
  (:meth:`WeightScrubber.watch`: the checks' own constants, the integer shapes...) are also checked
  whole, on demand (:meth:`WeightScrubber.check_watched`): the worker does it before it releases each
  slice's results, so none made with such a flip goes out as passed. Where it does not run, every
  weight is watched: a double run repeats a weight's fault and a range check misses one that stays in
  range, so the worker checks them all before it releases a slice with a tile such a check passed
  (and none where no tile claims a check).
- **The period follows the flux.** :func:`scrub_period_s` is short inside the SAA and at high
  latitude and long elsewhere, and never longer than one orbit, so a full pass happens at
  least once per orbit whatever the environment.

Cost: the scrubber keeps four copies of the weights (owned + three golden), so a model costs four
times its initializers in RAM. Measured on one PC core (zlib.crc32): ~2 GB/s; a 64 MiB model
scrubbed on the SAA period (30 s, owned + one golden copy per pass) took 0.2 % of the core, its
longest step 0.3 ms. An ARM core of a Jetson with its CRC instructions should be within a few
times of that (not measured).

Not covered: weights ONNX Runtime copies for itself (pre-packed GEMM/Conv weights, constants a
graph optimisation derives from them, device memory of a GPU provider), the model's code, the
runtime's own state, and these tables' Python objects (a flip there shows as an error, not a
silent result).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from flight.link.definitions import FluxClass

CHUNK_BYTES = 64 * 1024
"""One CRC per 64 KiB: small enough that a repair rewrites little, large enough that the CRC
table (4 bytes a chunk) and the per-chunk Python overhead stay negligible (~16 chunks per MiB)."""

STEP_BYTES = 4 * 1024 * 1024
"""The most owned bytes one :meth:`WeightScrubber.step` checks (golden-copy checks come on top,
the same amount again): about 4 ms of CRC on a PC core, so a 50 ms slice keeps its latency."""

BEHIND_FACTOR = 1.1
"""Scrub age over 1.1 periods counts as behind: a chunk comes due between two calls of the loop
(up to a second apart), so an age a little over the period is the loop's granularity, not a lag."""

HIGH_LATITUDE_DEG = 55.0
"""Above this geodetic latitude (either hemisphere) the environment counts as high latitude: the
outer belt's horns and solar energetic particles, which reach the polar caps where the
geomagnetic cutoff is low. A round figure (uncertain): the horns sit near 55-70 deg geomagnetic
latitude, which differs from geodetic by up to ~11 deg."""

DEFAULT_ORBIT_PERIOD_S = 5400.0
"""When the orbit is not known: 90 minutes, shorter than any LEO orbit the agent flies above
~280 km, so "at least one full pass per orbit" still holds."""

SCRUB_PERIOD_S = {
    FluxClass.SAA: 30.0,
    FluxClass.HIGH_LATITUDE: 300.0,
    FluxClass.UNKNOWN: 300.0,
    FluxClass.QUIET: 1500.0,
}
"""Full-pass period per environment, before the one-orbit cap. Why these numbers: FACTS.md
("Radiation") gives 80-97 % of LEO upsets inside the SAA, which a 550 km orbit is in ~7-13 % of
the time (flight/orbit/saa.py, by inclination); 90 % of the upsets in 10-15 % of the time makes
the SAA's rate ~50 times the rest's, so the quiet period is ~50 times the SAA's (30 s -> 1500 s)
for about the same expected number of upsets per pass. High latitude (and an environment not known, for want of an orbit) sits in
between, at 300 s. 30 s inside the SAA bounds how long a flipped weight can corrupt results
there; the SAA pass itself lasts 10-25 minutes."""


def flux_class(in_saa: bool | None, lat_deg: float | None) -> FluxClass:
    """The environment from the agent's prediction: SAA first, then high latitude, else quiet.

    ``None`` for either (no orbit) gives UNKNOWN.

    >>> flux_class(True, -30.0).value, flux_class(False, 70.0).value, flux_class(False, 10.0).value
    ('SAA', 'HIGH_LATITUDE', 'QUIET')
    """
    if in_saa is None or lat_deg is None or not math.isfinite(lat_deg):
        return FluxClass.UNKNOWN
    if in_saa:
        return FluxClass.SAA
    return FluxClass.HIGH_LATITUDE if abs(lat_deg) >= HIGH_LATITUDE_DEG else FluxClass.QUIET


def scrub_period_s(flux: FluxClass, orbit_period_s: float | None = None) -> float:
    """How long a full pass over the weights may take in ``flux``: :data:`SCRUB_PERIOD_S`, never
    longer than one orbit (``orbit_period_s``; :data:`DEFAULT_ORBIT_PERIOD_S` when not known).

    >>> scrub_period_s(FluxClass.SAA), scrub_period_s(FluxClass.QUIET), scrub_period_s(FluxClass.QUIET, 1200.0)
    (30.0, 1500.0, 1200.0)
    """
    orbit = orbit_period_s if orbit_period_s is not None and orbit_period_s > 0 else DEFAULT_ORBIT_PERIOD_S
    return min(SCRUB_PERIOD_S[FluxClass(flux)], float(orbit))


@dataclass(frozen=True)
class Repair:
    """One chunk put right. ``tensor`` and ``chunk`` (its index within the tensor) say where;
    ``offset`` is its first byte in the tensor; ``bytes_differing`` how many owned bytes were
    wrong (0 when only a golden copy or the CRC entry was); ``golden_fixed`` how many golden
    copies were outvoted and rewritten; ``source`` what the repair trusted: ``vote`` (the
    majority of the golden copies, matching the CRC), ``single copy`` (the one copy still
    matching the CRC where the vote did not) or ``crc table`` (the CRC entry was what was hit)."""

    tensor: str
    chunk: int
    offset: int
    bytes_differing: int
    golden_fixed: int
    source: str


class WeightsUnrepairable(Exception):
    """No copy of a chunk matches its CRC and the copies do not settle it: reload the model from
    the store (its SHA-256 checked) and build the session again. ``repairs``: the chunks the same
    call put right before it (found in audit: they were lost with the exception, neither counted nor
    said, while the results made before them may have been wrong)."""

    def __init__(self, tensor: str, chunk: int, repairs: Iterable[Repair] = ()):
        self.tensor, self.chunk = tensor, chunk
        self.repairs: list[Repair] = list(repairs)
        super().__init__(f"tensor {tensor!r} chunk {chunk}: no copy matches its CRC-32 and the golden copies "
                         f"disagree; reload the model from the store")


@dataclass(frozen=True)
class ScrubStats:
    """The scrubber's counters (since it was made) at ``now_s``.

    ``age_s`` is the scrub age: the time since the chunk checked longest ago was checked, i.e.
    how stale the oldest guarantee is. ``behind`` is True when that exceeds the period by more
    than :data:`BEHIND_FACTOR` (the budget, or the calls, could not keep up)."""

    tensors: int
    bytes_total: int
    chunks: int
    passes: int
    chunks_checked: int
    repairs: int
    golden_repairs: int
    last_full_pass_s: float | None
    age_s: float
    period_s: float
    behind: bool


class WeightScrubber:
    """The owned weights of one loaded model, their three golden copies and the CRC table.

    ``tensors`` maps each initializer's name to its verified value (the golden reference); the
    scrubber copies everything it keeps, so the caller's arrays are never written. ``now_s`` is
    any monotonic time (the same clock for every later call). Not thread-safe: scrub between
    session runs, in the thread that runs them.
    """

    def __init__(self, tensors: Mapping[str, np.ndarray], now_s: float, *, chunk_bytes: int = CHUNK_BYTES,
                 period_s: float = SCRUB_PERIOD_S[FluxClass.UNKNOWN]):
        if chunk_bytes < 1:
            raise ValueError(f"chunk_bytes must be positive, got {chunk_bytes}")
        self.chunk_bytes = chunk_bytes
        self.names: tuple[str, ...] = tuple(tensors)
        # Four separate allocations per tensor: np.array(copy=True) never shares memory.
        self.owned: dict[str, np.ndarray] = {}
        self._golden: list[list[np.ndarray]] = [[], [], []]
        self._owned_bytes: list[np.ndarray] = []
        for name in self.names:
            value = np.asarray(tensors[name])
            if value.dtype.hasobject:
                raise TypeError(f"tensor {name!r}: {value.dtype} has no fixed byte layout to scrub")
            owned = np.array(value, copy=True, order="C")
            self.owned[name] = owned
            self._owned_bytes.append(_bytes_of(owned))
            for copy in self._golden:
                copy.append(_bytes_of(np.array(value, copy=True, order="C")))
        self._chunks: list[tuple[int, int, int]] = []  # (tensor index, first byte, end byte)
        for t, raw in enumerate(self._owned_bytes):
            for start in range(0, raw.size, chunk_bytes):
                self._chunks.append((t, start, min(raw.size, start + chunk_bytes)))
        # The CRCs from the voted golden copy (all three are equal at load: the vote is any of them).
        self._crc = [zlib.crc32(self._golden[0][t][a:b]) for t, a, b in self._chunks]
        self._checked_at = np.full(len(self._chunks), float(now_s))
        self._cursor = 0
        self._owed = 0.0
        self._last_step_s = float(now_s)
        self.period_s = float(period_s)
        self.passes = 0
        self.chunks_checked = 0
        self.repairs = 0
        self.golden_repairs = 0
        self.last_full_pass_s: float | None = None
        self.bytes_total = int(sum(raw.size for raw in self._owned_bytes))
        self.watched: frozenset[str] = frozenset()  # :meth:`watch`
        self._watched_chunks: tuple[int, ...] = ()

    @classmethod
    def from_onnx(cls, model: bytes, now_s: float, **kwargs) -> WeightScrubber:
        """The initializers of an ONNX model (give it the store's verified bytes, its Constant nodes
        made initializers first: :func:`constants_as_initializers`). Tensors with no fixed layout
        (strings) are left to the model: :attr:`names` says which are scrubbed."""
        import onnx
        from onnx import numpy_helper

        proto = onnx.load_from_string(model)
        tensors = {}
        for init in proto.graph.initializer:
            if init.data_type == onnx.TensorProto.STRING:
                continue
            tensors[init.name] = numpy_helper.to_array(init)
        return cls(tensors, now_s, **kwargs)

    # --- checking ------------------------------------------------------------------------

    def step(self, now_s: float, budget_bytes: int = STEP_BYTES) -> list[Repair]:
        """Check the chunks owed since the last call (a full pass per :attr:`period_s`), round-robin,
        at most ``budget_bytes`` of owned bytes (at least one chunk when any is owed); repair what
        is wrong. Raises :class:`WeightsUnrepairable` for a chunk nothing can settle."""
        n = len(self._chunks)
        if n == 0:
            self._last_step_s = now_s
            return []
        dt = max(0.0, now_s - self._last_step_s)
        self._last_step_s = now_s
        # Owed at the rate of one pass per period; never more than a pass (after a long pause the
        # next calls catch up within the budget instead of in one burst).
        self._owed = min(float(n), self._owed + n * dt / max(self.period_s, 1e-9))
        repairs: list[Repair] = []
        spent = 0
        while self._owed >= 1.0 - 1e-9 and (spent == 0 or spent < budget_bytes):
            i = self._cursor
            t, a, b = self._chunks[i]
            try:
                repair = self._check(i, (self.passes % 3,), now_s)
            except WeightsUnrepairable as exc:
                exc.repairs[:0] = repairs  # the repairs before it stand: the caller counts and says them
                raise
            if repair is not None:
                repairs.append(repair)
            spent += b - a
            self._owed -= 1.0
            self._cursor = (i + 1) % n
            if self._cursor == 0:
                self.passes += 1
                self.last_full_pass_s = now_s
        return repairs

    def scrub_all(self, now_s: float) -> list[Repair]:
        """Check every chunk now, the owned buffers and all three golden copies; a full pass."""
        repairs = self._check_each(range(len(self._chunks)), (0, 1, 2), now_s)
        self.passes += 1
        self.last_full_pass_s = now_s
        return repairs

    def watch(self, names: Iterable[str]) -> None:
        """The tensors (of :attr:`names`; others are ignored) whose faults no check of the results sees:
        the worker has :meth:`check_watched` check them before it releases a slice's results that a check
        passed (the periodic scrub alone would find such a fault only after results made with it were
        reported good: found in review)."""
        index = {name: t for t, name in enumerate(self.names)}
        wanted = {index[n] for n in names if n in index}
        self.watched = frozenset(self.names[t] for t in wanted)
        self._watched_chunks = tuple(i for i, (t, _a, _b) in enumerate(self._chunks) if t in wanted)

    @property
    def watched_bytes(self) -> int:
        return sum(self._chunks[i][2] - self._chunks[i][1] for i in self._watched_chunks)

    def check_watched(self, now_s: float) -> list[Repair]:
        """Check the owned chunks of the :meth:`watch` ed tensors now, each against its CRC, and repair
        what is wrong from the vote (the golden copies are left to the passes). Raises
        :class:`WeightsUnrepairable` as :meth:`step` does."""
        return self._check_each(self._watched_chunks, (), now_s)

    def verify(self) -> bool:
        """True when every owned chunk matches its CRC (reads only; counts nothing)."""
        return all(zlib.crc32(self._owned_bytes[t][a:b]) == self._crc[i] for i, (t, a, b) in enumerate(self._chunks))

    def age_s(self, now_s: float) -> float:
        """The scrub age (see :class:`ScrubStats`): since the oldest check of any chunk, so that no chunk
        is older than it says. Not the chunk at the cursor: :meth:`check_watched` checks chunks out of
        turn, and where the cursor sat on one the age read as the time since the last slice (found in
        audit: a scrub stalled for 1450 s said 0 s, and one staying behind said SCRUB_BEHIND again and
        again). A minimum over one float a chunk: ~2,000 for a 120 MiB model, microseconds."""
        return max(0.0, float(now_s - self._checked_at.min())) if self._chunks else 0.0

    def stats(self, now_s: float) -> ScrubStats:
        age = self.age_s(now_s)
        return ScrubStats(len(self.names), self.bytes_total, len(self._chunks), self.passes, self.chunks_checked,
                          self.repairs, self.golden_repairs, self.last_full_pass_s, max(0.0, age), self.period_s,
                          age > BEHIND_FACTOR * self.period_s)

    # --- repairing -----------------------------------------------------------------------

    def _check_each(self, chunks: Iterable[int], golden: tuple[int, ...], now_s: float) -> list[Repair]:
        """:meth:`_check` of each of ``chunks``; an unrepairable one raises with the repairs made before it."""
        repairs: list[Repair] = []
        for i in chunks:
            try:
                repair = self._check(i, golden, now_s)
            except WeightsUnrepairable as exc:
                exc.repairs[:0] = repairs
                raise
            if repair is not None:
                repairs.append(repair)
        return repairs

    def _check(self, i: int, golden: tuple[int, ...], now_s: float) -> Repair | None:
        t, a, b = self._chunks[i]
        self.chunks_checked += 1
        self._checked_at[i] = now_s
        crc = self._crc[i]
        owned_ok = zlib.crc32(self._owned_bytes[t][a:b]) == crc
        golden_ok = all(zlib.crc32(self._golden[k][t][a:b]) == crc for k in golden)
        if owned_ok and golden_ok:
            return None
        return self._repair(i)

    def _repair(self, i: int) -> Repair:
        t, a, b = self._chunks[i]
        owned = self._owned_bytes[t][a:b]
        g = [self._golden[k][t][a:b] for k in range(3)]
        vote = (g[0] & g[1]) | (g[0] & g[2]) | (g[1] & g[2])  # bitwise majority of the three
        crc = self._crc[i]
        source = "vote"
        if zlib.crc32(vote) != crc:
            # The vote is not what was loaded. A copy that still matches the CRC is the truth (a flip
            # in the CRC entry would match no copy); failing that, four copies that agree outvote
            # the CRC entry, the one thing that was hit; anything else nothing here can settle.
            trusted = next((c for c in (*g, owned) if zlib.crc32(c) == crc), None)
            if trusted is not None:
                vote, source = trusted.copy(), "single copy"
            elif all(np.array_equal(c, vote) for c in (*g, owned)):
                self._crc[i] = zlib.crc32(vote)
                source = "crc table"
            else:
                raise WeightsUnrepairable(self.names[t], a // self.chunk_bytes)
        differing = int(np.count_nonzero(owned != vote))
        if differing:
            owned[...] = vote
        fixed = 0
        for copy in g:
            if not np.array_equal(copy, vote):
                copy[...] = vote
                fixed += 1
        self.repairs += 1
        self.golden_repairs += fixed
        return Repair(self.names[t], a // self.chunk_bytes, a, differing, fixed, source)

    # --- for tests and fault injection -------------------------------------------------

    def golden_bytes(self, copy: int, tensor: str) -> np.ndarray:
        """A writable byte view of golden copy ``copy`` (0..2) of ``tensor``: for fault injection."""
        return self._golden[copy][self.names.index(tensor)]

    def owned_bytes(self, tensor: str) -> np.ndarray:
        """A writable byte view of the owned buffer of ``tensor`` (the one the session reads)."""
        return self._owned_bytes[self.names.index(tensor)]


def _bytes_of(array: np.ndarray) -> np.ndarray:
    """A flat uint8 view of a C-contiguous array's memory (no copy: writing it writes the array)."""
    flat = array.reshape(-1)
    assert np.shares_memory(flat, array) or array.size == 0, "reshape of a C-contiguous array is a view"
    return flat.view(np.uint8)


def unowned_weights(model: bytes) -> list[str]:
    """The weights of an ONNX model that onnxruntime keeps its own copies of, whatever buffers it is
    given: those inside subgraphs (:func:`subgraph_weights`), sparse initializers and sparse
    Constant nodes (made dense at load). A model that has any is not claimed scrubbed."""
    import onnx

    graph = onnx.load_from_string(model).graph
    sparse = [t.values.name or t.indices.name or "sparse" for t in graph.sparse_initializer]
    sparse += [n.output[0] for n in graph.node if n.op_type == "Constant" and n.output
               and any(a.name == "sparse_value" for a in n.attribute)]
    return sparse + subgraph_weights(model)


def subgraph_weights(model: bytes) -> list[str]:
    """The tensors held inside the subgraphs of an ONNX model (the branches of an If, the bodies of a
    Loop or Scan, at any depth): their initializers and Constant nodes. onnxruntime takes the
    worker's buffers for the main graph's initializers only, so these stay its own copies, which no
    scrub sees; a model that has any is not claimed scrubbed."""
    import onnx

    from flight.compute.graphs import subgraphs

    found: list[str] = []
    for graph in subgraphs(onnx.load_from_string(model).graph):
        found.extend(t.name for t in graph.initializer)
        found.extend(node.output[0] for node in graph.node if node.op_type == "Constant" and node.output)
    return found


def constants_as_initializers(model: bytes) -> bytes:
    """``model`` with each top-level Constant node that holds numbers (``value``, ``value_float(s)``,
    ``value_int(s)``) made an initializer of the same name (the graph computes the same). Weights
    kept in Constant nodes (some exporters do) would otherwise never be owned, so never scrubbed,
    while the session says it is; unchanged bytes where there is none. A sparse constant stays
    (:func:`unowned_weights` names it); strings are not weights."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load_from_string(model)
    graph = proto.graph
    kept, moved = [], []
    as_array = {"value_float": lambda a: np.array(a.f, np.float32), "value_floats": lambda a: np.array(a.floats, np.float32),
                "value_int": lambda a: np.array(a.i, np.int64), "value_ints": lambda a: np.array(a.ints, np.int64)}
    for node in graph.node:
        attrs = list(node.attribute)
        if node.op_type != "Constant" or node.domain not in ("", "ai.onnx") or len(node.output) != 1 or len(attrs) != 1:
            kept.append(node)
        elif attrs[0].name == "value" and attrs[0].type == onnx.AttributeProto.TENSOR:
            tensor = onnx.TensorProto()
            tensor.CopyFrom(attrs[0].t)
            tensor.name = node.output[0]
            moved.append(tensor)
        elif attrs[0].name in as_array:
            moved.append(numpy_helper.from_array(as_array[attrs[0].name](attrs[0]), node.output[0]))
        else:
            kept.append(node)
    if not moved:
        return model
    del graph.node[:]
    graph.node.extend(kept)
    graph.initializer.extend(moved)
    return proto.SerializeToString()
