"""Ground completeness: which packets of each source the ground has, which are missing, what to
acknowledge to the agent's packet store, and what each pass brought (pure: no I/O, no clock).

The agent keeps every packet it sends in its store (``flight/agent/tm_store.py``) until the
ground acknowledges it, and plays back what was not acknowledged (TM(15,131) containers of
whole packets, ``flight/agent/downlink.py``). So the ground sees packets live, late (played
back, with their old sequence counts and times) and twice (a packet played back again because
its acknowledgement was lost, a reply and its stream copy, a serial line's two copies). A
packet is known by its *key*: (APID, 14-bit sequence count, packet time in ms, the CDS time
of its header rounded as the agent's store rounds it). :class:`CompletenessTracker` is fed
every packet the ground takes in and answers:

- :meth:`~CompletenessTracker.seen`: is this key already here (keep one copy of each);
- :meth:`~CompletenessTracker.take_runs`: the acknowledgement of what arrived since the last
  one, as :class:`~flight.link.messages.AckRun` runs (one per unbroken stretch of an APID's
  sequence, in time order). A tracker made with ``hold_acks`` (the ground server's, with an
  archive) acknowledges a key only once :meth:`~CompletenessTracker.committed` says the archive
  holds it: the agent deletes what is acknowledged, so a packet held only in memory must not be
  (found in audit: a crash lost packets acknowledged before the archive had committed them);
  :meth:`~CompletenessTracker.lost` forgets keys the archive could not keep, so that their
  playback is taken in again;
- :meth:`~CompletenessTracker.gaps`: sequence counts missing between packets received, per
  APID in packet-time order, with the time span each gap lies in. A count that goes back
  (not a wrap) is a new boot, not 16 000 lost packets, and so is a boot the ground was told
  of (:meth:`~CompletenessTracker.boot_at`, from housekeeping's ``uptime_s``): the counters
  restart at 0 with every boot;
- :meth:`~CompletenessTracker.passes`: per pass (reception with no silence longer than
  ``pass_gap_s`` on the ground's clock), per APID: packets received live, played back,
  duplicates dropped, and still missing within the pass's live packet-time span. A restarted
  ground server goes on with the pass its archive last recorded (:meth:`~CompletenessTracker.resume`):
  heard again within ``pass_gap_s`` of that pass's end, it is the same pass (found in review: a
  restart mid-pass split it in two), and a packet the archive had before the restart is a
  duplicate there, not new (:meth:`~CompletenessTracker.committed`'s ``copies``).

Bounded memory, said plainly: keys older than ``horizon_s`` of packet time before the newest
live packet are forgotten, and the oldest beyond ``max_keys`` (about 100 bytes each). A packet
older than that which comes again is not recognised here as a duplicate (the archive's own
key table still is: ``ground/archive.py``), and gaps before :attr:`CompletenessStats.known_from_ms`
are not counted. Passes beyond ``max_passes`` are forgotten too (the archive keeps their rows).
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, field

from flight.link.messages import MAX_ACK_RUNS, AckRun
from flight.link.packets import MAX_SEQ_COUNT

SEQ_BITS = 14  # a key packs (time_ms << 14) | seq_count: sorting the ints sorts by (time, seq)
HORIZON_S = 2 * 86_400.0  # the agent's store holds about this much (64 MB; housekeeping dropped first)
MAX_KEYS = 500_000  # ~50 MB of keys: 2 days at ~3 packets/s
PASS_GAP_S = 120.0  # a silence this long ends a pass (a low orbit's passes are ~90 min apart)
MAX_PASSES = 500
BOOT_TOLERANCE_MS = 1000  # a boot's start from packet time minus uptime: good to the clock's adjustments
PRUNE_EVERY = 4096  # keys added between looks at the horizon
WRAP_MARGIN = 256  # a count this close to 2**14 followed by one this close to 0 is a wrap, not a boot


def packet_key(apid: int, seq_count: int, time_s: float) -> tuple[int, int, int]:
    """(apid, seq_count, time_ms) of a packet, its time rounded as the agent's store rounds it.

    >>> packet_key(0x10, 5, 1795000000.25)
    (16, 5, 1795000000250)
    """
    return int(apid), int(seq_count), int(round(time_s * 1000.0))


def _pack(time_ms: int, seq: int) -> int:
    return (time_ms << SEQ_BITS) | seq


def _time(key: int) -> int:
    return key >> SEQ_BITS


def _seq(key: int) -> int:
    return key & MAX_SEQ_COUNT


def _count_order(keys: list[int]) -> list[int]:
    """``keys`` (sorted by time, then count) with the keys of each millisecond in count order across the wrap:
    they start after the widest step between their counts, taken modulo 2**14. Found in audit: a burst of one
    APID in one millisecond across the wrap (16382, 16383, 0, 1) sorted as 0, 1, 16382, 16383, and 16,380 were
    counted lost where none was."""
    out: list[int] = []
    i, n = 0, len(keys)
    while i < n:
        j = i + 1
        t = _time(keys[i])
        while j < n and _time(keys[j]) == t:
            j += 1
        if j - i > 1 and _seq(keys[i]) < WRAP_MARGIN and _seq(keys[j - 1]) > MAX_SEQ_COUNT - WRAP_MARGIN:
            seqs = [_seq(k) for k in keys[i:j]]
            widest = max(range(len(seqs)), key=lambda m: (seqs[(m + 1) % len(seqs)] - seqs[m]) & MAX_SEQ_COUNT)
            start = i + (widest + 1) % len(seqs)
            out.extend(keys[start:j])
            out.extend(keys[i:start])
        else:
            out.extend(keys[i:j])
        i = j
    return out


@dataclass(frozen=True)
class Gap:
    """Sequence counts of ``apid`` missing between two packets received: ``count`` of them from
    ``first_seq`` on (modulo 2**14), lying in packet time between ``after_ms`` (the packet before)
    and ``before_ms`` (the packet after)."""

    apid: int
    first_seq: int
    count: int
    after_ms: int
    before_ms: int

    @property
    def last_seq(self) -> int:
        return (self.first_seq + self.count - 1) & MAX_SEQ_COUNT


@dataclass(frozen=True)
class PassCounts:
    """One APID in one pass: new packets received live and played back, copies dropped, and
    sequence counts still missing within the pass's live packet-time span."""

    received: int = 0
    played_back: int = 0
    duplicates: int = 0
    missing: int = 0

    def __add__(self, other: PassCounts) -> PassCounts:
        return PassCounts(self.received + other.received, self.played_back + other.played_back,
                          self.duplicates + other.duplicates, self.missing + other.missing)

    @staticmethod
    def total(apids: tuple[tuple[int, PassCounts], ...]) -> PassCounts:
        """The sum over a pass's APIDs."""
        out = PassCounts()
        for _apid, counts in apids:
            out = out + counts
        return out


@dataclass(frozen=True)
class PassReport:
    """A pass: reception from ``start_s`` to ``end_s`` (the ground's clock) with no silence longer
    than the tracker's ``pass_gap_s``; ``first_ms`` .. ``last_ms``: the packet times of the
    packets received live in it (None if only played-back packets came); ``apids``: per APID,
    sorted by APID."""

    index: int
    start_s: float
    end_s: float
    first_ms: int | None
    last_ms: int | None
    open: bool
    apids: tuple[tuple[int, PassCounts], ...]

    @property
    def totals(self) -> PassCounts:
        return PassCounts.total(self.apids)

    def to_json(self) -> dict:
        t = self.totals
        return {"index": self.index, "start_s": self.start_s, "end_s": self.end_s,
                "first_s": None if self.first_ms is None else self.first_ms / 1000.0,
                "last_s": None if self.last_ms is None else self.last_ms / 1000.0, "open": self.open,
                "received": t.received, "played_back": t.played_back, "duplicates": t.duplicates,
                "missing": t.missing,
                "apids": [{"apid": apid, "received": c.received, "played_back": c.played_back,
                           "duplicates": c.duplicates, "missing": c.missing} for apid, c in self.apids]}


@dataclass(frozen=True)
class CompletenessStats:
    keys: int              # packet keys held
    received: int          # new packets taken in, live or played back
    played_back: int       # of them, from playback containers
    duplicates: int        # copies dropped
    forgotten: int         # keys let go (horizon, cap)
    pending_ack: int       # keys received and not yet in an acknowledgement
    known_from_ms: int | None  # no key older than this is held (None: none forgotten yet)


@dataclass
class _Pass:
    index: int
    start_s: float
    end_s: float
    first_ms: int | None = None
    last_ms: int | None = None
    counts: dict[int, list[int]] = field(default_factory=dict)  # apid -> [received, played back, duplicates]
    dirty: bool = True

    def count(self, apid: int, which: int) -> None:
        self.counts.setdefault(apid, [0, 0, 0])[which] += 1
        self.dirty = True


class CompletenessTracker:
    """What the ground has of each APID's sequence; see the module's docstring."""

    def __init__(self, pass_gap_s: float = PASS_GAP_S, horizon_s: float = HORIZON_S, max_keys: int = MAX_KEYS,
                 max_passes: int = MAX_PASSES, hold_acks: bool = False):
        """``hold_acks``: acknowledge a key only once :meth:`committed` (see the module's docstring)."""
        if not pass_gap_s > 0 or not horizon_s > 0 or max_keys < 1 or max_passes < 1:
            raise ValueError(f"pass_gap_s {pass_gap_s} and horizon_s {horizon_s} must be above 0, max_keys "
                             f"{max_keys} and max_passes {max_passes} at least 1")
        self.pass_gap_s = float(pass_gap_s)
        self.horizon_ms = int(horizon_s * 1000.0)
        self.max_keys = int(max_keys)
        self.max_passes = int(max_passes)
        self._keys: dict[int, set[int]] = {}      # apid -> packed keys held
        self._order: dict[int, list[int]] = {}    # apid -> the same keys, sorted when _unsorted says not
        self._unsorted: set[int] = set()
        self._new: dict[int, set[int]] = {}       # apid -> keys to acknowledge
        self.hold_acks = bool(hold_acks)
        # apid -> key -> (its pass, 0 live or 1 played back): taken in, not yet committed (hold_acks)
        self._held: dict[int, dict[int, tuple[_Pass, int]]] = {}
        self._boots: list[int] = []               # boot start times (packet time, ms), sorted
        self._boot_seen: dict[int, int] = {}      # boot start -> the latest packet time its housekeeping was seen
        self._boot_first: dict[int, int] = {}     # boot start -> the earliest packet time its housekeeping was seen
        self._passes: list[_Pass] = []
        self._live_ms: int | None = None          # time of the newest live packet: "now" on the agent's clock
        self._newest_ms: int | None = None        # of any packet: "now" for a tracker that hears only playback
        self.acks_dropped = 0  # keys never acknowledged because nobody took the runs (the agent plays them again)
        self._since_prune = 0
        self._count = 0  # keys held, all APIDs
        self.received = 0
        self.played_back = 0
        self.duplicates = 0
        self.archived_copies = 0  # of the duplicates, those new here that the archive already had (a restart)
        self.archived_copies_played_back = 0  # of them, those taken as played back (not in ``played_back`` now)
        self.forgotten = 0
        self.known_from_ms: int | None = None

    # --- intake ----------------------------------------------------------------------------

    def seen(self, apid: int, seq: int, time_ms: int) -> bool:
        """Whether the ground already has this packet."""
        keys = self._keys.get(apid)
        return keys is not None and _pack(time_ms, seq) in keys

    def add(self, apid: int, seq: int, time_ms: int, received_s: float, played_back: bool = False) -> bool:
        """Take in one packet received at ``received_s`` (the ground's clock); True if it is new,
        False if it is a copy of one already here (counted, and to be dropped by the caller).

        A copy that came in playback is acknowledged again: the agent plays back only what it
        thinks the ground lacks, so the acknowledgement it had was lost on the way up."""
        if not 0 <= seq <= MAX_SEQ_COUNT:
            raise ValueError(f"sequence count {seq} outside 0..{MAX_SEQ_COUNT}")
        current = self._reception(received_s)
        key = _pack(time_ms, seq)
        keys = self._keys.setdefault(apid, set())
        if key in keys:
            self.duplicates += 1
            current.count(apid, 2)
            if played_back and key not in self._held.get(apid, ()):  # held: acknowledged once committed
                self._new.setdefault(apid, set()).add(key)
            return False
        keys.add(key)
        self._count += 1
        order = self._order.setdefault(apid, [])
        if order and key < order[-1]:
            self._unsorted.add(apid)
        order.append(key)
        if self.hold_acks:
            self._held.setdefault(apid, {})[key] = (current, 1 if played_back else 0)
        else:
            self._new.setdefault(apid, set()).add(key)
        self._newest_ms = time_ms if self._newest_ms is None else max(self._newest_ms, time_ms)
        self.received += 1
        if played_back:
            self.played_back += 1
            current.count(apid, 1)
            self._touch(time_ms)  # it may fill a gap of an earlier pass
        else:
            current.count(apid, 0)
            current.first_ms = time_ms if current.first_ms is None else min(current.first_ms, time_ms)
            current.last_ms = time_ms if current.last_ms is None else max(current.last_ms, time_ms)
            self._live_ms = time_ms
        self._since_prune += 1
        if self._since_prune >= PRUNE_EVERY or self._count > self.max_keys:
            self.prune()
        return True

    def boot_at(self, time_ms: int, seen_ms: int | None = None) -> None:
        """An agent boot began at this packet time (housekeeping: packet time minus ``uptime_s``):
        sequence counts start again there, so no gap is counted across it. ``seen_ms``: the packet
        time of the housekeeping that said so (the boot was still running then)."""
        i = bisect_left(self._boots, time_ms)
        near = [b for b in self._boots[max(0, i - 1):i + 1] if abs(b - time_ms) <= BOOT_TOLERANCE_MS]
        if not near:
            self._boots.insert(i, time_ms)
            self._touch(time_ms)
        boot = near[0] if near else time_ms
        if seen_ms is not None and seen_ms > self._boot_seen.get(boot, -1):
            self._boot_seen[boot] = seen_ms
        if seen_ms is not None and seen_ms < self._boot_first.get(boot, seen_ms + 1):
            self._boot_first[boot] = seen_ms

    def _one_boot(self, from_ms: int, to_ms: int) -> bool:
        """Whether one boot is known to span ``from_ms`` to ``to_ms``: it began before the first and its
        housekeeping was seen after the second, and no other began between."""
        b = bisect_right(self._boots, from_ms) - 1
        if b < 0 or (b + 1 < len(self._boots) and self._boots[b + 1] <= to_ms + BOOT_TOLERANCE_MS):
            return False
        return self._boot_seen.get(self._boots[b], -1) >= to_ms

    def boot_between(self, from_ms: int, to_ms: int) -> bool | None:
        """What housekeeping told of the agent's boots between two packet times, as :meth:`gaps` judges them:
        True, one began between them (counts began again at 0); False, one boot is known to span them (a count
        gone back is a wrap, past lost packets); None, neither is known, or ``to_ms`` is before ``from_ms`` (a
        clock set back says nothing of the boots). For the live gap count (:class:`flight.link.packets.GapCounter`)."""
        if to_ms < from_ms:
            return None
        # Past the tolerance: a boot's start is packet time less uptime, each rounded (found in review: the first
        # packet of a boot, 1 ms before its estimate, had that boot "between" it and the next: a restart, twice)
        b = bisect_right(self._boots, from_ms + BOOT_TOLERANCE_MS)
        if b < len(self._boots) and self._boots[b] <= to_ms + BOOT_TOLERANCE_MS:
            return True
        if not self._one_boot(from_ms, to_ms):
            return None
        # And seen running by then: a board with no clock of its own restarts behind its old time, and the new
        # boot's start falls before from_ms (found in review: a restart so was a wrap, 12 083 lost)
        b = bisect_right(self._boots, from_ms) - 1
        return False if self._boot_first.get(self._boots[b], to_ms + 1) <= from_ms else None

    def _reception(self, received_s: float) -> _Pass:
        """The pass this reception belongs to: the current one, or a new one after a silence."""
        current = self._passes[-1] if self._passes else None
        if current is None or received_s - current.end_s > self.pass_gap_s:
            current = _Pass(current.index + 1 if current else 1, received_s, received_s)
            self._passes.append(current)
            del self._passes[:-self.max_passes]
        elif received_s > current.end_s:
            current.end_s = received_s
        return current

    def _touch(self, time_ms: int) -> None:
        """A packet or a boot at ``time_ms`` changes what is missing in the passes spanning it."""
        for p in self._passes:
            if p.first_ms is not None and p.first_ms <= time_ms <= p.last_ms:
                p.dirty = True

    def resume(self, report: PassReport, keys: Iterable[tuple[int, int, int]] = ()) -> None:
        """Go on counting a pass recorded before (a restarted ground server's last, from its
        archive): reception within ``pass_gap_s`` of its ``end_s`` continues it, its counts
        carried on, a later one begins the next pass. ``keys`` ((apid, seq_count, time_ms)): the
        packets the archive holds within its live span, so that its missing counts stay right
        and their copies are duplicates. Only before any packet; ValueError naming the field for a
        report that does not hold together (a damaged row: nothing is taken from it)."""
        if self._passes or self._count:
            raise ValueError("resume: only before any packet is taken in")
        if not (math.isfinite(report.start_s) and math.isfinite(report.end_s) and report.start_s <= report.end_s):
            raise ValueError(f"pass end_s {report.end_s} before start_s {report.start_s} (or not finite)")
        if (report.first_ms is None) != (report.last_ms is None) or (
                report.first_ms is not None and report.first_ms > report.last_ms):
            raise ValueError(f"pass first_ms {report.first_ms} and last_ms {report.last_ms}: both or neither, "
                             "first not after last")
        counts: dict[int, list[int]] = {}
        for apid, c in report.apids:
            if min(c.received, c.played_back, c.duplicates) < 0:
                raise ValueError(f"pass APID {apid}: received, played_back and duplicates at least 0, not "
                                 f"{c.received}, {c.played_back}, {c.duplicates}")
            counts[apid] = [c.received, c.played_back, c.duplicates]
        packed: dict[int, set[int]] = {}
        for apid, seq, time_ms in keys:
            if not 0 <= seq <= MAX_SEQ_COUNT:
                raise ValueError(f"key of APID {apid}: sequence count {seq} outside 0..{MAX_SEQ_COUNT}")
            packed.setdefault(apid, set()).add(_pack(time_ms, seq))
        for apid, got in packed.items():
            self._keys[apid] = got
            self._order[apid] = sorted(got)
            self._count += len(got)
        self._passes.append(_Pass(max(1, report.index), report.start_s, report.end_s, report.first_ms,
                                  report.last_ms, counts, dirty=False))

    @property
    def pass_index(self) -> int:
        """The current pass's number (0 before any packet): it changes when a new pass begins."""
        return self._passes[-1].index if self._passes else 0

    # --- acknowledgements ------------------------------------------------------------------

    def committed(self, keys: Iterable[tuple[int, int, int]], copies: Iterable[tuple[int, int, int]] = ()) -> None:
        """The archive has committed these packets ((apid, seq_count, time_ms), as :func:`packet_key`):
        they go into the next acknowledgement. ``copies``: those among them the archive had already
        (taken in by a server since restarted, played back again): counted as duplicates in their
        pass, not as new (found in review: a restart mid-pass counted them as new playback)."""
        for apid, seq, time_ms in copies:
            self._recount(apid, _pack(time_ms, seq))
        for apid, seq, time_ms in keys:
            key = _pack(time_ms, seq)
            self._release(apid, key)
            self._new.setdefault(apid, set()).add(key)

    def _recount(self, apid: int, key: int) -> None:
        """A key held as new that the archive already had: a duplicate in the pass that counted it."""
        where = self._held.get(apid, {}).get(key)
        if where is None:
            return  # not held (no hold_acks, or let go at the bound): nothing counted it as new here
        p, which = where
        self._release(apid, key)
        counts = p.counts.setdefault(apid, [0, 0, 0])
        counts[which] -= 1
        counts[2] += 1
        p.dirty = True
        self.received -= 1
        self.duplicates += 1
        self.archived_copies += 1
        if which == 1:
            self.played_back -= 1
            self.archived_copies_played_back += 1

    def _release(self, apid: int, key: int) -> None:
        """``key`` of ``apid`` no longer waits for the archive."""
        held = self._held.get(apid)
        if held is not None:
            held.pop(key, None)
            if not held:
                del self._held[apid]

    def lost(self, keys: Iterable[tuple[int, int, int]]) -> None:
        """The archive could not keep these packets (its recorder dropped them): never acknowledged,
        and forgotten here, so that the agent's playback of them is new again (and archived)."""
        gone: dict[int, set[int]] = {}
        for apid, seq, time_ms in keys:
            key = _pack(time_ms, seq)
            self._release(apid, key)
            known = self._keys.get(apid)
            if known is not None and key in known:
                known.discard(key)
                gone.setdefault(apid, set()).add(key)
        for apid, out in gone.items():
            self._order[apid] = [k for k in self._order[apid] if k not in out]  # one pass, order kept
            self._count -= len(out)

    def take_runs(self, max_runs: int = MAX_ACK_RUNS) -> list[AckRun]:
        """What arrived since the last acknowledgement, as runs: per APID (in order), its new
        keys sorted by (time, sequence count), consecutive counts (modulo 2**14) in one run. At
        most ``max_runs``; what does not fit stays for the next call."""
        if max_runs < 0:
            raise ValueError(f"max_runs {max_runs}: at least 0")
        runs: list[AckRun] = []
        for apid in sorted(self._new):
            keys = sorted(self._new[apid])
            i = 0
            while i < len(keys) and len(runs) < max_runs:
                j = i
                # A run spans at most 2**14 counts: its width is taken modulo 2**14 on board.
                while (j + 1 < len(keys) and j - i < MAX_SEQ_COUNT
                       and _seq(keys[j + 1]) == (_seq(keys[j]) + 1) & MAX_SEQ_COUNT):
                    j += 1
                runs.append(AckRun(apid, _seq(keys[i]), _seq(keys[j]), _time(keys[i]), _time(keys[j])))
                i = j + 1
            if i < len(keys):
                self._new[apid] = set(keys[i:])
            else:
                del self._new[apid]
            if len(runs) >= max_runs:
                break
        return runs

    # --- gaps --------------------------------------------------------------------------------

    def _sorted(self, apid: int) -> list[int]:
        order = self._order.get(apid, [])
        if apid in self._unsorted:
            order.sort()  # timsort: the live tail is already in order, played-back keys merge in
            self._unsorted.discard(apid)
        return order

    def apids(self) -> list[int]:
        return sorted(a for a, keys in self._keys.items() if keys)

    def gaps(self, apid: int | None = None, from_ms: int | None = None, to_ms: int | None = None) -> list[Gap]:
        """Sequence counts missing between packets received (both within [from_ms, to_ms] when
        given), per APID in packet-time order; not across a boot (one the tracker was told of). A count
        that goes back, not at the wrap's margin, is a wrap past lost packets only where housekeeping of
        one boot is known on both sides of it (an audit: 700 lost across the wrap counted as none); else
        a boot the tracker was not told of (a review: counted so, a crash loop before its first
        housekeeping made 16,000 false losses a restart)."""
        out: list[Gap] = []
        for a in ([apid] if apid is not None else self.apids()):
            order = self._sorted(a)
            lo = 0 if from_ms is None else bisect_left(order, _pack(from_ms, 0))
            hi = len(order) if to_ms is None else bisect_right(order, _pack(to_ms, MAX_SEQ_COUNT))
            found = self._gaps_in(a, order, lo, hi)
            if found is None:  # one millisecond's counts across the wrap: in count order, then counted
                found = self._gaps_in(a, _count_order(order[lo:hi]), 0, hi - lo)
            out.extend(found or ())
        return out

    def _gaps_in(self, apid: int, keys: list[int], lo: int, hi: int) -> list[Gap] | None:
        """The gaps between ``keys[lo:hi]``, as :meth:`gaps` says; None where two keys of one millisecond
        are out of count order across the wrap (:func:`_count_order` puts them in it)."""
        out: list[Gap] = []
        for k in range(lo + 1, hi):
            prev, cur = keys[k - 1], keys[k]
            ps, cs = _seq(prev), _seq(cur)
            missing = (cs - ps - 1) & MAX_SEQ_COUNT
            if missing == 0 or cs == ps:
                continue
            pt, ct = _time(prev), _time(cur)
            if pt == ct and ps < WRAP_MARGIN and cs > MAX_SEQ_COUNT - WRAP_MARGIN:
                return None
            wrap = ps > MAX_SEQ_COUNT - WRAP_MARGIN and cs < WRAP_MARGIN
            if cs < ps and not wrap and not self._one_boot(pt, ct):
                continue  # back, and no boot known to span it: a new boot
            b = bisect_right(self._boots, pt)
            if b < len(self._boots) and self._boots[b] <= ct + BOOT_TOLERANCE_MS:
                continue  # a boot between them: its counts began again at 0
            out.append(Gap(apid, (ps + 1) & MAX_SEQ_COUNT, missing, pt, ct))
        return out

    def missing(self, apid: int | None = None, from_ms: int | None = None, to_ms: int | None = None) -> int:
        return sum(g.count for g in self.gaps(apid, from_ms, to_ms))

    # --- passes ------------------------------------------------------------------------------

    def _report(self, p: _Pass, now_s: float | None) -> PassReport:
        latest = p is self._passes[-1]
        is_open = latest and (now_s is None or now_s - p.end_s <= self.pass_gap_s)
        apids = []
        for apid in sorted(p.counts):
            received, played, dups = p.counts[apid]
            missing = 0 if p.first_ms is None else self.missing(apid, p.first_ms, p.last_ms)
            apids.append((apid, PassCounts(received, played, dups, missing)))
        return PassReport(p.index, p.start_s, p.end_s, p.first_ms, p.last_ms, is_open, tuple(apids))

    def passes(self, now_s: float | None = None) -> list[PassReport]:
        """Every pass still held, oldest first; the last is ``open`` unless ``now_s`` (the
        ground's clock) is more than ``pass_gap_s`` after its last packet."""
        return [self._report(p, now_s) for p in self._passes]

    def take_changed(self, now_s: float | None = None) -> list[PassReport]:
        """The passes whose numbers may have changed since the last call (new packets in them, a
        gap of theirs filled by playback, a boot learnt), for whoever keeps them (the archive)."""
        out = [self._report(p, now_s) for p in self._passes if p.dirty]
        for p in self._passes:
            p.dirty = False
        return out

    # --- memory ------------------------------------------------------------------------------

    def prune(self) -> int:
        """Forget keys older than the horizon before the newest live packet, then the oldest
        beyond ``max_keys``; return how many went."""
        self._since_prune = 0
        newest = self._live_ms if self._live_ms is not None else self._newest_ms
        if newest is None:
            return 0
        cut_key = _pack(newest - self.horizon_ms, 0)
        total = self._count
        if total > self.max_keys:  # the oldest beyond the cap: a cutoff key that leaves max_keys
            # by (time, count), not time alone (found in audit: a board clock standing still put every key in one
            # millisecond, and none went: the keys grew past the cap, each add sorting them all)
            ordered = sorted(k for order in self._order.values() for k in order)
            # a tenth of room: not every add; at least one kept (found in audit: max_keys below 10 ran past the list)
            cut_key = max(cut_key, ordered[total - max(1, self.max_keys * 9 // 10)])
        cutoff = _time(cut_key)
        if sum(len(v) for v in self._new.values()) > self.max_keys:  # nobody takes the runs: bounded anyway
            self.acks_dropped += sum(len(v) for v in self._new.values())
            self._new.clear()
        if sum(len(v) for v in self._held.values()) > self.max_keys:  # nothing commits: bounded anyway
            self.acks_dropped += sum(len(v) for v in self._held.values())
            self._held.clear()
        gone = 0
        for apid in list(self._order):
            order = self._sorted(apid)
            cut = bisect_left(order, cut_key)
            if not cut:
                continue
            keys = self._keys[apid]
            for key in order[:cut]:
                keys.discard(key)  # still acknowledged if it waits in _new: forgotten here, not there
            del order[:cut]
            gone += cut
        self._count -= gone
        if gone:
            self.forgotten += gone
            self.known_from_ms = cutoff if self.known_from_ms is None else max(self.known_from_ms, cutoff)
            kept_from = bisect_left(self._boots, cutoff)
            for boot in self._boots[:kept_from]:
                self._boot_seen.pop(boot, None)
                self._boot_first.pop(boot, None)
            del self._boots[:kept_from]
            self._passes = [p for p in self._passes if p.last_ms is None or p.last_ms >= cutoff or
                            p is self._passes[-1]]
        return gone

    def stats(self) -> CompletenessStats:
        return CompletenessStats(self._count, self.received, self.played_back, self.duplicates, self.forgotten,
                                 sum(len(k) for k in self._new.values()) + sum(len(k) for k in self._held.values()),
                                 self.known_from_ms)


