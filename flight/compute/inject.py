"""Upsets the HIL harness puts into the compute worker's memory: the weights it owns, the
activations (through a hook in the graph) and the outputs it holds. HIL only: the worker honours
them only when started with ``--upset-injection`` (the agent's ``[compute] upset_injection``,
which the harness sets in the configuration it writes); a board never sets it.

The harness is the truth (hil/loop.py: Poisson draws from the profile's upset rate x a factor)
and asks, one JSON file per upset in ``<compute root>/hil-upsets/``; this module is the worker's
side, which makes each happen where a proton would and follows it to its end:

- ``weights``: one bit of one byte drawn uniformly over the buffers the scrubbers of the models
  open own, the very ones onnxruntime computes from. It stays until the scrub repairs it, a failed
  check's scrub does, or the session is built anew from the store; only what put it right found it
  (a failed check whose scrub was skipped, or that another upset failed, left it where it was).
- ``golden``: the same in one of the scrubber's three golden copies, drawn uniformly (three times
  the owned bytes in all; a scenario names them among its targets to have them hit). No result
  reads them: it stays until a scrub pass checks that copy (one copy a pass, all three after a
  failed check) and the vote of the three puts it right, or the session goes.
- ``activations``: one bit of one element drawn uniformly over every tensor the model's own nodes
  make, in the next batch: that batch runs on a copy of the session's graph whose tensors pass
  through ``Where(mask, value, T)`` hooks (:func:`with_hooks`), on the same owned weights.
- ``outputs``: one bit of one probability of the next batch while the worker holds it, after
  the session returned it and its CRC-32 was taken, before it is classified (the worker checks
  that CRC on release and runs the batch again on a mismatch).

Every batch run while an upset is live is judged against a reference session on the model's
checked bytes, whose weights onnxruntime keeps apart from the owned buffers: a tile is corrupt
when its class changed, a probability moved by more than :data:`CONSEQUENCE`, or it is not
finite. The ledger (``hil-upsets/ledger.json``, checked JSON, rewritten atomically when it
changes) gives each upset: where it landed, what detected it (``checksum``, ``double run``,
``output CRC``, ``scrub``, ``reload``), whether it was put right, and its corrupt tiles by what their product said
of them (passed, unchecked, failed). The judging costs a reference run per batch touched, which is
why it never runs on a board.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from flight.compute.checks import FAILED, PASSED, UNCHECKED, check_flags
from flight.storage import CorruptFile, quarantine, read_checked_json, write_checked_json

if TYPE_CHECKING:  # onnx is imported where a graph is made or read: a harness reading only TARGETS (hil.scenario,
    import onnx   # every sunlit-hil process) does without its 0.6 s of import

REQUEST_DIR = "hil-upsets"
LEDGER = "ledger.json"
TARGETS = ("weights", "activations", "outputs", "golden")
DEFAULT_TARGETS = ("weights", "activations", "outputs")  # a scenario's, unless it names golden too
_BYTE_TARGETS = ("weights", "golden")  # a request may name their tensor and byte; their bit is 0..7
_BATCH_TARGETS = ("activations", "outputs")  # struck into the next batch, and ended with it
CONSEQUENCE = 1e-3  # a probability moved by more than this, or the class changed: the tile is corrupt
MAX_PENDING = 10_000  # upsets waiting or live at once; a request past it is counted (dropped), not followed
MAX_LISTED = 2_000  # ended upsets the ledger lists one by one; older ones are folded into its totals
_COUNTED = ("requested", "applied", "not_applied", "waiting", "detected", "corrected", "harmful", "corrupt_tiles",
            "corrupt_reported_good", "corrupt_unchecked", "corrupt_marked_failed", "shared")


def flip_bit(value: np.float32, bit: int) -> np.float32:
    """``value`` with bit ``bit`` (0..31) of its IEEE-754 single flipped."""
    return np.array([value], np.float32).view(np.uint32).__xor__(np.uint32(1 << bit)).view(np.float32)[0]


def owned_sites(scrubber: Any) -> tuple[tuple[str, ...], np.ndarray]:
    """(tensor names, cumulative byte counts) of a scrubber's owned buffers: a byte drawn uniformly
    over all of them, as a proton would hit one."""
    return scrubber.names, np.cumsum([scrubber.owned_bytes(n).size for n in scrubber.names])


def draw_byte(rng: np.random.Generator, names: tuple[str, ...], ends: np.ndarray) -> tuple[str, int, int]:
    """(tensor, byte within it, bit 0..7), uniform over every byte of ``ends``' buffers."""
    k = int(rng.integers(int(ends[-1])))
    t = int(np.searchsorted(ends, k, side="right"))
    return names[t], k - (int(ends[t - 1]) if t else 0), int(rng.integers(8))


def with_hooks(model: onnx.ModelProto, tensors: tuple[str, ...]) -> onnx.ModelProto:
    """A copy of ``model`` where each tensor ``T`` of ``tensors`` passes through ``Where(T/mask, T/value, T)``.

    The node that made ``T`` now writes ``T/raw`` (with ``'`` added where the model has that name);
    every consumer (the model's and the checksum pass's) reads the hooked ``T``. Inputs ``T/mask``
    (bool, broadcast to ``T``'s shape) and ``T/value`` (float [1]), refused where the model has
    either name; ``T`` is also an output, so a clean run gives the value to flip.
    """
    import onnx
    from onnx import TensorProto, helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    # The names it adds must be new: found in audit, a model with tensors h and h/raw had two makers of h/raw (a
    # graph onnxruntime refused, so no activation upset of that model was ever struck). The raw tensor and the
    # hook are the graph's own, given a name no other has; the inputs are the caller's to feed, so refused.
    taken = {t.name for t in g.initializer} | {v.name for v in [*g.input, *g.output, *g.value_info]} | {
        o for n in g.node for o in n.output} | {n.name for n in g.node}

    def unclaimed(wanted: str) -> str:
        while wanted in taken:
            wanted += "'"
        taken.add(wanted)
        return wanted

    hooks = []
    for name in tensors:
        producer = next((n for n in g.node if name in n.output), None)
        if producer is None:
            raise ValueError(f"no node makes {name!r}")
        clash = next((fed for fed in (name + "/mask", name + "/value") if fed in taken), None)
        if clash is not None:
            raise ValueError(f"the model already has a tensor or node named {clash!r}, an input the hook of "
                             f"{name!r} adds")
        raw = unclaimed(name + "/raw")
        producer.output[list(producer.output).index(name)] = raw
        hooks.append(helper.make_node("Where", [name + "/mask", name + "/value", raw], [name],
                                      name=unclaimed(name + "/hook")))
        g.input.append(helper.make_tensor_value_info(name + "/mask", TensorProto.BOOL, None))
        g.input.append(helper.make_tensor_value_info(name + "/value", TensorProto.FLOAT, [1]))
        if name not in {o.name for o in g.output}:
            g.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    nodes = list(g.node)  # keep the node list topological: each hook right after its producer
    del g.node[:]
    for n in nodes:
        g.node.append(n)
        g.node.extend(h for h in hooks if h.input[2] in n.output)
    return out


def activation_tensors(model: onnx.ModelProto, skip_prefix: str = "abft/") -> tuple[str, ...]:
    """The float tensors the model's own nodes make (not the checksum pass's): where activations live."""
    import onnx
    from onnx import TensorProto

    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.graph.value_info, *inferred.graph.output]}
    out = []
    for node in model.graph.node:
        if node.name.startswith(skip_prefix):
            continue
        for name in node.output:
            if name and not name.startswith(skip_prefix) and types.get(name) == TensorProto.FLOAT:
                out.append(name)
    return tuple(out)


def batch_first_tensors(model: onnx.ModelProto) -> frozenset[str]:
    """The tensors whose first axis is the model input's batch axis, as shape inference carries its
    symbolic size (``N``) through: those whose element belongs to one sample. Empty where the
    input's first size is a number: a tensor's first size equal to it could then be a coincidence."""
    inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    dims = inputs[0].type.tensor_type.shape.dim if inputs else []
    batch = dims[0].dim_param if dims else ""
    if not batch:
        return frozenset()
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    return frozenset(v.name for v in [*inferred.graph.value_info, *inferred.graph.output]
                     if v.type.tensor_type.shape.dim and v.type.tensor_type.shape.dim[0].dim_param == batch)


@dataclasses.dataclass
class Upset:
    """One upset the harness asked for, and what became of it."""

    id: str
    target: str
    seed: int
    state: str = "waiting"  # waiting (no batch or session yet), live, ended, not_applied
    site: str = ""
    batches: int = 0  # batches whose result it was in (weights: run while it was in memory)
    detected_by: str = ""
    corrected: bool = False  # put right (repaired, or its batch's product was right after all)
    corrupt_tiles: int = 0
    corrupt_passed: int = 0  # corrupt, and the product said passed: reported good while corrupt
    corrupt_unchecked: int = 0  # corrupt, and the product said unchecked
    corrupt_failed: int = 0  # corrupt, and the product marked them failed
    # Judged batches in which another upset could reach the same tiles (a weight upset reaches them all):
    # what those tiles showed is charged to each of them, so its counts there are not its alone.
    shared_batches: int = 0
    note: str = ""
    want_tensor: str = ""  # the request may name the tensor, the byte (weights) and the bit; else drawn
    want_byte: int | None = None
    want_bit: int | None = None
    # Not in the ledger: where a weight or golden-copy upset sits (session, scrubber, tensor, byte, the golden
    # copy or None, the byte's value before it), or the held array an output upset is in; what put a weight
    # upset right while a batch was being checked.
    _where: Any = dataclasses.field(default=None, repr=False, compare=False)
    _repaired_by: str = dataclasses.field(default="", repr=False, compare=False)
    # The tiles of its batch it can reach: an activation's sample (a tensor with the batch axis first), an
    # output's row; None: every tile (a weight, or an activation of a tensor without the batch axis).
    _rows: tuple[int, ...] | None = dataclasses.field(default=None, repr=False, compare=False)

    def ledger(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if not f.name.startswith(("_", "want_"))}

    @classmethod
    def from_ledger(cls, entry: dict[str, Any]) -> Upset:
        """An upset as a ledger lists it (a restarted worker carries its predecessor's on)."""
        names = {f.name for f in dataclasses.fields(cls) if not f.name.startswith(("_", "want_"))}
        return cls(**{k: v for k, v in entry.items() if k in names})

    def counts(self) -> dict[str, int]:
        """What this upset adds to the ledger's totals (:data:`_COUNTED`)."""
        return {"requested": 1, "applied": int(self.state in ("live", "ended")),
                "not_applied": int(self.state == "not_applied"), "waiting": int(self.state == "waiting"),
                "detected": int(bool(self.detected_by)), "corrected": int(self.corrected),
                "harmful": int(self.corrupt_tiles > 0), "corrupt_tiles": self.corrupt_tiles,
                "corrupt_reported_good": self.corrupt_passed, "corrupt_unchecked": self.corrupt_unchecked,
                "corrupt_marked_failed": self.corrupt_failed, "shared": int(self.shared_batches > 0)}


@dataclasses.dataclass
class Batch:
    """The upsets one batch's result carries, from its first run to its release into the product."""

    upsets: list[Upset] = dataclasses.field(default_factory=list)
    failed_check: str = ""  # what failed in its first run ("" if nothing did)
    first_ok: np.ndarray | None = None  # the first run's per-tile flags where it was the hooked run, else None


class UpsetInjector:
    """The worker's side of the harness's upsets: takes the requests, makes them happen, judges.

    Nothing here raises into the worker: a request that cannot be carried out is marked
    ``not_applied`` with the reason, and the batch runs as if there were none."""

    def __init__(self, root: Path, open_reference: Callable[[bytes], Any], open_hooked: Callable[[bytes, Any], Any]):
        """``open_reference(data)``: a plain session on ``data`` (weights onnxruntime's own);
        ``open_hooked(data, session)``: a session on the hooked graph ``data`` over the owned
        weights of the worker's session."""
        self.dir = Path(root) / REQUEST_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        self._open_reference = open_reference
        self._open_hooked = open_hooked
        self.upsets: list[Upset] = []
        self._folded = {t: dict.fromkeys(_COUNTED, 0) for t in TARGETS}  # ended upsets no longer listed
        self._rebuilt: list[Any] = []  # sessions the worker dropped because of a fault (rebuilt())
        self._taken: list[Path] = []  # request files taken in, removed once the ledger listing them is written
        self.bad_requests = 0
        self.dropped = 0
        self.unjudged = 0  # batches that carried upsets and could not be judged (the reference run failed)
        self.restarts = 0  # workers before this one that kept this ledger
        self.ledgers_lost = 0  # ledgers found corrupt at a start: what they counted is gone (the harness fails on it)
        self.errors: list[str] = []  # what went wrong in the injector itself (the first few)
        self._references: dict[str, Any] = {}  # model sha256 + protection + precision -> reference session
        self._hooked: dict[int, tuple[Any, Any, tuple[str, ...]]] = {}  # id(session) -> (session, hooked, tensors)
        self._batch_first: frozenset[str] = frozenset()  # of the hooked model (batch_first_tensors)
        self._in_flight: Batch | None = None  # the batch being run and checked now
        self.failed_flags: str | None = None  # which flags the last first run failed, where it went through the hooks
        self._changed = False
        # Each released batch once, however many upsets it carried: its corrupt tiles by what the
        # product said of them (the per-upset counts share a batch's tiles).
        self.batches = {"judged": 0, "corrupt_tiles": 0, "corrupt_reported_good": 0, "corrupt_unchecked": 0,
                        "corrupt_marked_failed": 0}
        self._carry_on()

    def _carry_on(self) -> None:
        """A worker started again (a reboot, the watchdog, a crash) takes up the ledger its
        predecessor wrote: its counts go on, and what was in that process's memory ends with it (a
        live weight upset is gone with the memory it was in, found by nothing; one waiting never
        struck). Without this the first change wrote over it, and the corrupt results it had
        counted were lost to the run's report."""
        path = self.dir / LEDGER
        if not path.exists():
            return
        try:
            body = read_checked_json(path)
            entries = [Upset.from_ledger(e) for e in body.get("upsets", [])]
            totals = body.get("totals", {})
            for t in TARGETS:  # what the totals hold beyond the upsets listed: folded before
                listed = [u.counts() for u in entries if u.target == t]
                for key in _COUNTED:
                    self._folded[t][key] = int(totals.get(t, {}).get(key, 0)) - sum(c[key] for c in listed)
            for key in self.batches:
                self.batches[key] = int(body.get("batches", {}).get(key, 0))
            self.bad_requests, self.dropped = int(body.get("bad_requests", 0)), int(body.get("dropped", 0))
            self.unjudged, self.restarts = int(body.get("unjudged", 0)), int(body.get("restarts", 0)) + 1
            self.ledgers_lost = int(body.get("ledgers_lost", 0))
            self.errors = [str(e) for e in body.get("errors", [])][:20]
        except (CorruptFile, AttributeError, KeyError, TypeError, ValueError) as exc:
            # Moved aside and counted (found in audit: written over, and the corrupt tiles it had counted
            # were lost, the run failing on "asked for and in no ledger")
            moved = quarantine(path)
            self.errors.append(f"the previous worker's ledger could not be carried on: {exc}; moved aside as "
                               f"{moved.name if moved else 'nothing'}"[:200])
            self.ledgers_lost, self.restarts = 1, 1
            self._changed = True
            return
        for u in entries:
            if u.state == "live":
                u.state, u.corrected, u.note = "ended", True, "the worker restarted: gone with its memory, found by nothing"
            elif u.state == "waiting":
                u.state, u.note = "not_applied", "the worker restarted before it struck"
        self.upsets = entries
        self._changed = True

    def _broke(self, upsets: list[Upset], what: str, exc: BaseException) -> None:
        reason = f"{what}: {type(exc).__name__}: {exc}"[:200]
        if len(self.errors) < 20:
            self.errors.append(reason)
        for u in upsets:
            if u.state in ("waiting", "live"):
                u.state, u.note, u._where = "not_applied", reason, None
        self._changed = True

    # --- requests ---------------------------------------------------------------------------

    def poll(self) -> None:
        """Take the requests the harness has written, each once. A request's file is removed once the
        ledger that lists it is written (:meth:`save`), so a worker killed in between leaves it for
        the next one, which carries the ledger on: no request is lost to a restart, none taken twice."""
        try:
            names = sorted(p for p in os.listdir(self.dir) if p.endswith(".json") and p != LEDGER)
        except OSError:
            return
        known = {u.id for u in self.upsets}
        pending = sum(u.state in ("waiting", "live") for u in self.upsets)  # counted once, not once a file
        for name in names:
            path = self.dir / name
            if name[:-5] in known:  # taken already (by this worker, or by the last, whose ledger lists it)
                if path not in self._taken:
                    self._taken.append(path)
                    self._changed = True
                continue
            try:
                body = read_checked_json(path)
                target, seed = body["target"], int(body["seed"])
                if target not in TARGETS:
                    raise ValueError(f"target {target!r} is none of {TARGETS}")
                if not 0 <= seed < 2 ** 63:
                    raise ValueError(f"seed {seed} outside 0..2**63")
                tensor, byte, bit = str(body.get("tensor", "")), body.get("byte"), body.get("bit")
                if bit is not None and not 0 <= int(bit) < (8 if target in _BYTE_TARGETS else 32):
                    raise ValueError(f"bit {bit} outside the {target}' width")
                if byte is not None and (target not in _BYTE_TARGETS or not tensor or int(byte) < 0):
                    raise ValueError("a byte is for weights or golden copies, with its tensor, and not negative")
                if tensor and target == "outputs":  # found in audit: struck into the held probabilities all the same
                    raise ValueError("an output upset strikes the result the worker holds: it names no tensor")
            except (CorruptFile, KeyError, TypeError, ValueError, OverflowError):
                self.bad_requests += 1
                self._changed = True
                target = None
            self._taken.append(path)
            self._changed = True
            if target is None:
                continue
            if pending >= MAX_PENDING:
                self.dropped += 1
                self._changed = True
                continue
            self.upsets.append(Upset(name[:-5], target, seed, want_tensor=tensor,
                                     want_byte=None if byte is None else int(byte),
                                     want_bit=None if bit is None else int(bit)))
            pending += 1
            self._changed = True

    def waiting(self, target: str) -> list[Upset]:
        return [u for u in self.upsets if u.state == "waiting" and u.target == target]

    def live(self) -> bool:
        """A weight upset is in memory now, or one waits for the next batch: judge the batches (not for a
        golden copy's: no result reads them)."""
        return any((u.state == "live" and u.target == "weights") or (u.state == "waiting" and u.target in _BATCH_TARGETS)
                   for u in self.upsets)

    # --- weights ------------------------------------------------------------------------------

    def strike_weights(self, *sessions: Any) -> None:
        """Put the waiting weight upsets into the owned buffers of one of ``sessions`` (worker ``_Session``),
        and the golden ones into one of its scrubber's golden copies. The byte is drawn, with the upset's
        seed, over the owned bytes of every session given that has them: a bigger model is hit more often
        (found in audit: every upset went into the first session opened, never the model running)."""
        scrubbed = [s for s in sessions if s.scrubber is not None]
        for u in [*self.waiting("weights"), *self.waiting("golden")]:
            if not scrubbed:
                u.state, u.note = "not_applied", "the session's weights are not buffers the worker owns (no scrub, or a GPU)"
                self._changed = True
                continue
            try:
                rng = np.random.default_rng(u.seed)
                # A named tensor is struck in a session that has it; a single session draws as it always did.
                hosts = [s for s in scrubbed if u.want_tensor in s.scrubber.names] if u.want_tensor else scrubbed
                if not hosts:
                    raise ValueError(f"no owned weights named {u.want_tensor!r}")
                sites = [owned_sites(s.scrubber) for s in hosts]  # each: (tensor names, cumulative bytes)
                starts = np.cumsum([0, *(int(c[-1]) if len(c) else 0 for _n, c in sites)])
                names = tuple((k, name) for k, (tensors, _c) in enumerate(sites) for name in tensors)
                ends = np.concatenate([c + starts[k] for k, (_n, c) in enumerate(sites)])
                (host, tensor), byte, bit = draw_byte(rng, names, ends)  # a golden copy: the same sizes
                session = hosts[host]
                scrubber = session.scrubber
                copy = int(rng.integers(3)) if u.target == "golden" else None
                if u.want_tensor:  # the request names the tensor (and maybe the byte)
                    tensor, size = u.want_tensor, scrubber.owned_bytes(u.want_tensor).size
                    byte = int(rng.integers(size)) if u.want_byte is None else u.want_byte
                    if byte >= size:
                        raise ValueError(f"byte {byte} outside {tensor}'s {size}")
                bit = bit if u.want_bit is None else u.want_bit
                memory = scrubber.owned_bytes(tensor) if copy is None else scrubber.golden_bytes(copy, tensor)
                before = int(memory[byte])  # put right when the byte is this again
                memory[byte] ^= np.uint8(1 << bit)
            except Exception as exc:  # noqa: BLE001 - HIL only: said in the ledger, never raised into the worker
                self._broke([u], u.target, exc)
                continue
            where = "" if copy is None else f"golden copy {copy}: "
            u.state, u.site = "live", f"{where}{tensor}[byte {byte}] bit {bit}"
            # A byte another live upset hit: right again when it is as it was before the first (found in audit:
            # each took the byte as it found it, so a second flip of the same bit ended the first as put right by a
            # scrub that never ran, and the second never ended); a flip that put it back undoes them both.
            same = [v for v in self.upsets if v is not u and v.state == "live" and v._where is not None
                    and v._where[1] is scrubber and v._where[2:5] == (tensor, byte, copy)]
            if same:
                before = same[0]._where[5]
            u._where = (session, scrubber, tensor, byte, copy, before)
            if same and int(memory[byte]) == before:
                for v in (*same, u):
                    v.state, v.corrected, v._where = "ended", True, None
                    v.note = "undone by another upset on the same bit before anything looked: nothing to find"
            self._changed = True

    def rebuilt(self, sessions: list[Any]) -> None:
        """The worker drops ``sessions`` because of a fault (weights the scrub could not repair, a
        batch failing again after a scrub): their upsets end as found and put right by a reload.
        A session closed for any other reason (threads, parameters, another model version) ends its
        upsets too, but as found by nothing."""
        self._rebuilt.extend(s for s in sessions if all(s is not r for r in self._rebuilt))

    def settle(self, sessions: list[Any]) -> None:
        """Weight and golden-copy upsets put right since: the byte they hit is as it was before (a scrub's
        vote), or the session it was in is gone (built anew from the store after a fault: :meth:`rebuilt`; or
        closed for another reason: put right, found by nothing). One put right while a batch is
        being checked is credited to that batch's check when it is released."""
        for u in self.upsets:
            if u.state != "live" or u.target not in _BYTE_TARGETS:
                continue
            session, scrubber, tensor, byte, copy, before = u._where
            memory = scrubber.owned_bytes(tensor) if copy is None else scrubber.golden_bytes(copy, tensor)
            if all(s is not session for s in sessions):
                how = "reload" if any(r is session for r in self._rebuilt) else ""
            elif int(memory[byte]) == before:  # the byte it hit is as it was (found in review: compared with
                how = "scrub"  # another copy, a second upset on the same bit there ended it unrepaired)
            else:
                continue
            u.state, u.corrected, u._where = "ended", True, None
            if not how:
                u.note = "its session was closed (threads, parameters or a model change): gone undetected"
            if self._in_flight is not None and u in self._in_flight.upsets:
                u._repaired_by = how  # the batch's check may have found it first: see release()
            else:
                u.detected_by = u.detected_by or how
            self._changed = True
        live = [u._where[0] for u in self.upsets if u.state == "live" and u.target in _BYTE_TARGETS]
        self._rebuilt = [r for r in self._rebuilt if any(r is s for s in live)]  # bounded: only sessions still owed

    # --- a batch --------------------------------------------------------------------------

    def first_run(self, session: Any, tiles: np.ndarray, run: Callable[[Any, np.ndarray], tuple]) -> tuple[tuple, Batch]:
        """The batch's first run with the activation upsets that wait for it (through the hooked
        graph; every one that waits, one per tensor: another on a tensor already hit waits for the
        next batch). Returns ``run``'s (probabilities, flags) and the batch's upsets so far (the
        weight upsets in ``session``'s memory now: not another model's, which this batch never reads;
        the activations struck), in flight until :meth:`release`."""
        batch = Batch([u for u in self.upsets
                       if u.state == "live" and u.target == "weights" and u._where[0] is session])
        self._in_flight = batch
        self.failed_flags = None  # set by a hooked run: which of its flags failed
        act = self.waiting("activations")
        if act and session.data:
            try:
                result = self._hooked_run(session, tiles, act)
                batch.upsets += [u for u in act if u.state == "live"]
                batch.first_ok = result[1]
                self._changed = True
                return result, batch
            except Exception as exc:  # noqa: BLE001 - HIL only: the batch runs as if nothing waited
                self._broke([u for u in act if u.state in ("waiting", "live")], "activations", exc)
        elif act:
            self._broke(act, "activations", ValueError("no model bytes to hook"))
        return run(session, tiles), batch

    def checked(self, batch: Batch, failed_check: str) -> None:
        """What failed in the batch's first run, once it has been checked (and rerun if need be)."""
        batch.failed_check = failed_check
        self._in_flight = None

    def strike_output(self, probs: np.ndarray, batch: Batch | None) -> tuple[np.ndarray, Batch | None]:
        """The output upsets that wait, all of them: one bit of one probability each of the result
        ``probs`` while the worker holds it (after its CRC was taken). Returns the array to hold
        (``probs`` untouched when nothing waits) and the batch's upsets with them."""
        out = self.waiting("outputs")
        if not out:
            return probs, batch
        try:
            held = np.array(probs, copy=True)
            width = held.shape[-1] if held.ndim > 1 else 1
            for u in out:
                rng = np.random.default_rng(u.seed)
                k, bit = int(rng.integers(held.size)), int(rng.integers(32))
                bit = bit if u.want_bit is None else u.want_bit
                before = held.flat[k]
                held.flat[k] = flip_bit(before, bit)
                u._rows = (k // width,) if held.ndim > 1 else None
                u.state, u.site = "live", (f"probabilities[{k // width},{k % width}] bit {bit}: "
                                           f"{float(before):.6g} -> {float(held.flat[k]):.6g}")
        except Exception as exc:  # noqa: BLE001 - HIL only
            self._broke(out, "outputs", exc)
            return probs, batch
        batch = batch if batch is not None else Batch()
        batch.upsets += out
        self._changed = True
        return held, batch

    def release(self, batch: Batch, session: Any, tiles: np.ndarray, probs: np.ndarray, status: np.ndarray,
                crc_changed: bool) -> None:
        """The batch's result goes into the product as ``probs`` with per-tile ``status``: judged
        once against the reference (the batch totals: each tile once), and charged to each upset it
        carried on the tiles that upset can reach (:attr:`Upset.shared_batches` where another could
        reach them too). An activation or output upset ends here."""
        if not batch.upsets:
            return
        try:
            reference = self._reference(session)
            clean = reference.run([session.outputs[0]], {session.input_name: tiles})[0]
        except Exception as exc:  # noqa: BLE001 - HIL only: no judgement, said so and counted (the run fails on it)
            self.unjudged += 1
            reason = f"not judged: reference run: {type(exc).__name__}: {exc}"[:200]
            if len(self.errors) < 20:
                self.errors.append(reason)
            for u in batch.upsets:
                u.batches += 1
                if u.target != "weights":  # struck, and its batch went into the product unjudged
                    u.state, u.note = "ended", reason
            self._changed = True
            return
        finite = np.isfinite(probs).all(axis=1)
        bad = (~finite | (np.abs(np.nan_to_num(probs, nan=9.0) - clean) > CONSEQUENCE).any(axis=1)
               | (np.nan_to_num(probs, nan=-1.0).argmax(axis=1) != clean.argmax(axis=1)))
        b = self.batches
        b["judged"] += 1
        b["corrupt_tiles"] += int(bad.sum())
        b["corrupt_reported_good"] += int((bad & (status == PASSED)).sum())
        b["corrupt_unchecked"] += int((bad & (status == UNCHECKED)).sum())
        b["corrupt_marked_failed"] += int((bad & (status == FAILED)).sum())
        for u in batch.upsets:
            # Each upset is charged with the tiles it can reach (an activation's sample, an output's row;
            # a weight's, all), and says where another in the batch could reach them too.
            rows = list(u._rows) if u._rows is not None else slice(None)
            mine, said = bad[rows], status[rows]
            u.batches += 1
            u.shared_batches += any(o is not u and (o._rows is None or u._rows is None or set(o._rows) & set(u._rows))
                                    for o in batch.upsets)
            u.corrupt_tiles += int(mine.sum())
            u.corrupt_passed += int((mine & (said == PASSED)).sum())
            u.corrupt_unchecked += int((mine & (said == UNCHECKED)).sum())
            u.corrupt_failed += int((mine & (said == FAILED)).sum())
            if not u.detected_by:  # what found this upset: the CRC finds only a held result's
                if u.target == "outputs":
                    u.detected_by = "output CRC" if crc_changed else ""
                elif u.target == "activations" and u._rows is not None and batch.first_ok is not None \
                        and "double run" not in batch.failed_check:  # the flags alone failed: did its own tile's?
                    u.detected_by = batch.failed_check if not batch.first_ok[rows].all() else ""
                elif u.target == "weights":  # found only where the check's scrub (or reload) put it right: a
                    # failed check alone (another upset's, or its scrub skipped as one ran just before) found nothing
                    u.detected_by = (batch.failed_check or u._repaired_by) if u._repaired_by else ""
                else:
                    u.detected_by = batch.failed_check
            if u.target != "weights":
                u.state, u.corrected = "ended", not mine.any()
        self._changed = True

    def end_unreleased(self) -> None:
        """The end of a slice: an activation or output upset whose batch never reached a product
        (the job failed on the way) ends here, harmless to any product."""
        self._in_flight = None
        for u in self.upsets:
            if u.state == "live" and u.target in _BATCH_TARGETS:
                u.state, u.corrected, u.note = "ended", True, "its batch reached no product"
                self._changed = True

    def _hooked_run(self, session: Any, tiles: np.ndarray, upsets: list[Upset]) -> tuple:
        hooked, tensors = self._hooked_session(session)
        outputs = list(session.outputs) + [t for t in tensors if t not in session.outputs]
        feed: dict[str, Any] = {session.input_name: tiles}
        off = np.zeros(1, bool)
        for t in tensors:
            feed[t + "/mask"], feed[t + "/value"] = off, np.zeros(1, np.float32)
        clean = dict(zip(outputs, hooked.run(outputs, feed)))
        sizes = np.cumsum([clean[t].size for t in tensors])
        hit: set[str] = set()
        for u in upsets:
            rng = np.random.default_rng(u.seed)
            if u.want_tensor and u.want_tensor not in tensors:
                self._broke([u], "activations", ValueError(f"no hooked tensor named {u.want_tensor!r}"))
                continue
            if u.want_tensor:  # an element of the named tensor
                i = tensors.index(u.want_tensor)
                k = (int(sizes[i - 1]) if i else 0) + int(rng.integers(clean[u.want_tensor].size))
            else:
                k = int(rng.integers(int(sizes[-1])))
                i = int(np.searchsorted(sizes, k, side="right"))
            name, at, bit = tensors[i], k - (int(sizes[i - 1]) if i else 0), int(rng.integers(32))
            bit = bit if u.want_bit is None else u.want_bit
            if name in hit:
                continue  # one value a hook: this one waits for the next batch
            hit.add(name)
            mask = np.zeros(clean[name].shape, bool)
            mask.flat[at] = True
            new = flip_bit(clean[name].flat[at], bit)
            feed[name + "/mask"], feed[name + "/value"] = mask, np.array([new], np.float32)
            shape, n = clean[name].shape, len(tiles)
            u._rows = (at // (clean[name].size // n),) if name in self._batch_first and shape and shape[0] == n else None
            u.state, u.site = "live", f"{name}[{at}] bit {bit}: {float(clean[name].flat[at]):.6g} -> {float(new):.6g}"
        got = hooked.run(list(session.outputs), feed)
        self.failed_flags = ""
        if len(got) == 1:  # nothing checks this model's results
            return got[0], None
        ok, self.failed_flags = check_flags(session.outputs[1:], got[1:], len(tiles))  # as the worker reads them
        return got[0], ok

    def _hooked_session(self, session: Any) -> tuple[Any, tuple[str, ...]]:
        kept = self._hooked.get(id(session))
        if kept is not None and kept[0] is session:
            return kept[1], kept[2]
        import onnx

        model = onnx.load_from_string(session.data)
        tensors = activation_tensors(model)
        hooked = self._open_hooked(with_hooks(model, tensors).SerializeToString(), session)
        self._hooked = {id(session): (session, hooked, tensors)}  # one model at a time
        self._batch_first = batch_first_tensors(model)
        return hooked, tensors

    def _reference(self, session: Any) -> Any:
        key = f"{session.sha256}/{session.protection}/{session.abft_precision}"  # the bytes it was protected to
        ref = self._references.get(key)
        if ref is None:
            self._references = {key: self._open_reference(session.data)}  # one model at a time
            ref = self._references[key]
        return ref

    # --- the ledger -------------------------------------------------------------------------

    def totals(self) -> dict[str, dict[str, int]]:
        out = {t: dict(self._folded[t]) for t in TARGETS}
        for u in self.upsets:
            mine = out[u.target]
            for key, value in u.counts().items():
                mine[key] += value
        return out

    def _fold(self) -> None:
        """Bounded: past :data:`MAX_LISTED` ended upsets, the oldest go into the totals only."""
        done = [u for u in self.upsets if u.state in ("ended", "not_applied")]
        if len(done) <= MAX_LISTED:
            return
        gone = {id(u) for u in done[:len(done) - MAX_LISTED]}
        for u in done[:len(done) - MAX_LISTED]:
            for key, value in u.counts().items():
                self._folded[u.target][key] += value
        self.upsets = [u for u in self.upsets if id(u) not in gone]

    def save(self) -> None:
        """Rewrite the ledger if anything changed since it was last written."""
        if not self._changed:
            return
        self._fold()
        body = {"totals": self.totals(), "batches": self.batches, "bad_requests": self.bad_requests,
                "dropped": self.dropped, "unjudged": self.unjudged, "restarts": self.restarts,
                "ledgers_lost": self.ledgers_lost, "errors": self.errors,
                "upsets": [u.ledger() for u in self.upsets]}
        try:
            write_checked_json(self.dir / LEDGER, json.loads(json.dumps(body)))
        except OSError as exc:  # a full disk: the ledger is written at the next change
            if len(self.errors) < 20:
                self.errors.append(f"ledger not written: {exc}"[:200])
            return
        self._changed = False
        for path in self._taken:  # listed in the ledger on disk now: their requests are done with
            try:
                path.unlink()
            except OSError:
                pass
        self._taken = []
