"""Checked inference under injected bit flips (flight.compute.abft). Prints one JSON object as its last line.

The shipped cloud-screening model, protected by :func:`flight.compute.abft.protect`
(float32 tolerance), on onnxruntime's CPU provider.

- ``abft_detect_rate``: of the injected single-bit flips that change the output beyond
  tolerance, the share flagged. A flip is *consequential* when, for some tile of the batch,
  a class probability or the cloud fraction moves by more than ``CONSEQUENCE`` (1e-3), the
  class (argmax) changes, or an output becomes non-finite; it is *detected* when every such
  tile has ``abft_ok`` false. Cases are drawn from a seeded generator, as an upset in memory
  lands: ``BY_SIZE_FLIPS`` flip a weight (any weight of the model's own, an element drawn in
  proportion to each tensor's size, then a bit 0..31, in a copy whose weights are graph inputs,
  i.e. the weights in memory after protection), as many an activation (any tensor the model's
  own nodes make, an element of the batch's tensor drawn the same way, then a bit, through a
  ``Where`` node inserted after the node, before its consumers and its check, so one model
  serves every injection); each case on its own batch of ``FLIP_BATCH`` held-out tiles.
  ``abft_flips_injected``, ``abft_flips_consequential``; the two halves apart in
  ``abft_detect_rate_weights`` and ``abft_detect_rate_activations``; ``abft_flagged_harmless``
  the flips that changed nothing beyond tolerance but were flagged (the check saw a real error
  too small to matter). A tile whose two classes are all but tied changes class under any
  perturbation, one well inside the tolerance too: such a flip counts as consequential and
  missed. ``abft_detect_rate_checked_sites`` (and ``_checked_weights``, ``_checked_activations``):
  ``FLIPS`` flips in the checked nodes' weights and outputs alone, the tensor drawn uniformly
  among them, then an element (the headline until an audit found the four bias tensors, 4 %
  of the weights, drew half of its weight flips).
- Between the checked nodes: ``unchecked_detect_rate_weights`` (the input normalisation's
  constants, read by Sub and Div) and ``unchecked_detect_rate_activations`` (the normalised input,
  the Relu and Sigmoid outputs, the pooled features), which the checks see since each predicts from
  its input recomputed apart (``abft.protect``'s ``recompute_inputs``, pass version 6; before, about
  half of such activation flips and none of the constants' passed). ``detect_rate_activations_all_sites``:
  flips in every activation of the model, the tensor drawn in proportion to its elements (as an
  upset in memory lands; the checked nodes' outputs are under half of them), the outputs made past
  the last checks included (the probabilities and the cloud fraction, which the pass compares with
  their copies since version 7; before, a flip there passed), judged by ``abft_ok``;
  ``range_detect_rate_activations_all_sites`` the same draws by ``abft_ok`` and ``range_ok``. Those
  outputs are a few numbers a tile, seldom drawn by element: ``past_checks_detect_rate`` draws flips
  in them alone, ``past_checks_detect_rate_without_compare`` the same flips on the model as version 6
  protected it.
- ``abft_detect_rate_tf32_tolerance``: flips drawn as ``abft_detect_rate_checked_sites`` draws
  them (compare with that, not the headline), against a model protected with
  ``precision="tf32"`` (the looser tolerance a GPU that rounds operands to TF32 needs), run
  here on the CPU: what a Jetson Orin would catch with TF32 allowed (``[compute] gpu_tf32``; by
  default the worker runs with TF32 forbidden and checks at fp32).
- ``abft_overhead``: protected over bare, sessions as the worker opens them without
  ``weights_scrub`` (CPU provider, 1 thread, graph optimisation ``all``), batch 64, all
  outputs; ``OVERHEAD_PAIRS`` interleaved pairs of ``OVERHEAD_RUNS`` runs each (which goes
  first alternates), the median of the per-pair ratios, minus 1. ``abft_overhead_extended``:
  the same with optimisation ``extended``. ``abft_overhead_by_setting``: the same figure for
  each of ``OVERHEAD_SETTINGS``: sessions as the worker opens them by default, with
  ``weights_scrub`` (``owned``: owned initializers, pre-packing off, ``extended``), and without
  (``all``), on 1 and 2 threads, batches of 64 and 16 tiles. Each setting runs the model the
  worker makes for it: at ``all``, where onnxruntime's x86 builds keep Conv outputs in their
  blocked NCHWc layout and reorder every one the checks read (``abft_nchwc_at_all``: this
  build does), the pass sums h1 with a GlobalAveragePool, which reads that layout; elsewhere
  with a ReduceSum, the faster read of a plain tensor (onnxruntime's Arm builds have NCHWc
  kernels only where built with that option). ``abft_overhead_by_layout``: both models
  (``plain``, ``nchwc``) at both levels, 1 thread, batch 64: what the choice is worth.
  ``abft_overhead_without_recompute`` (``all``) and ``abft_overhead_extended_without_recompute``:
  the same model with checks that read their nodes' own inputs (version 5's), which miss a fault
  between checked nodes: what the recomputed copies cost.
  ``abft_overhead_floor``: what reading the checked nodes' outputs costs by itself (each also a
  graph output, through a Shape that reads no data, so onnxruntime cannot fuse them with their
  activations), 1 thread, batch 64, ``owned``: the part no checksum design can remove.
  ``abft_overhead_floor_all``: the same at ``all``, the headline's setting, where reading an
  output also breaks onnxruntime's NCHWc chain there (reorders the bare model does not run): on
  x86 it came to 0.14 to 0.19 by itself, nearly the whole of a 0.15 target at that setting.
  ``abft_overhead_read_floor`` (``owned``) and ``abft_overhead_read_floor_all``: checks that read
  their nodes' own inputs (no copies): each checked node's output and data input also summed once per channel (tensors_summed, checks_reads: every
  tensor of the model's own that the checks read, with a ReduceSum, or a GlobalAveragePool where
  the checks use one) and nothing else, no comparison, no tolerance: what checks made of
  standard ONNX nodes must at least read, as each compares the output it vouches for with a
  prediction from the input. Its reads are the checks' own, so it is a floor for this design;
  another design reading less would have to leave an output or an input unread. At batch 64 the
  bare model takes about 0.65 ms here, and a pass over one of its activations (up to 1 MB) costs
  several percent of it, whatever the layout. Only checks inside the convolution kernels
  (TensorRT's ABED) avoid those passes; in standard ONNX they are nodes of their own.
- ``abft_wide_layers``: single generated layers wider than the shipped model's (Convs of 64 to
  512 channels, Gemms of 1024 and 4096 inputs; wide_layers), run as the worker runs owned
  weights: per layer ``false_alarms`` [flagged, tiles] over six kinds of input (normal,
  non-negative, constant, a dynamic range of 1e6, sparse) at batches of 1 and 16, and of
  ``WIDE_FLIPS`` flips of the sign or lowest exponent bit of a random weight, the samples whose
  output moved by more than 1e-3 of its scale (``flips_moved``) and those flagged
  (``flips_caught``), and the form of its check; ``abft_wide_false_alarms`` and
  ``abft_wide_detect_rate`` over all of them. Where the checks' tolerance grows with a layer's
  size and a flip's effect does not. ``abft_wide_overhead``: per layer, what its check costs
  (as ``abft_overhead``, batches of 16, fewer pairs) with owned weights and at ``all``: layers
  whose arithmetic, not their reads, sets their time.
- ``abft_overhead_by_width``: whole generated models of one shape at widths :data:`WIDTHS` (a small
  CNN: four 3x3 Convs with Relus, two of stride 2, on 64 x 64 tiles, ``width`` channels then twice
  that, a Gemm head; weights drawn, not trained: ``model_of_width``), per width what the checks cost
  as ``abft_overhead`` measures it (1 thread, batches of 16 tiles of noise, fewer pairs) at ``all``,
  ``extended`` and with owned weights (``owned``, the worker's default), its multiply-adds a tile, clean
  (noise) tiles flagged, and flips of a random bit of a random weight judged as the headline's are:
  how the cost falls as a model's arithmetic grows against what it moves through memory, of which the
  shipped model (under a thousand weights, 16 x 16 tiles) is the extreme (``width_figures``).
- ``abft_detect_rate_over_1e-2``, ``abft_detect_rate_class_only``: the same flips judged by
  a coarser consequence (an output moved by > 1e-2; the class alone, or non-finite).
- ``false_alarms``: tiles flagged among ``false_alarm_tiles`` clean ones (batches of 64): the
  held-out tiles; ``GENERATED_TILES`` procedural tiles from the same generator with another seed,
  each its own draw; tiles of uniform random reflectance over the data's range; and flat tiles
  (0, the data's maximum, 1.0): ``false_alarm_tiles_distinct`` of them (until an audit, most were
  the 8 rotations and mirrors of fewer draws, which sum the same values in another order). All of them at level
  ``all`` on 1 thread (``false_alarms_1_thread``) and as the worker opens owned-weight sessions by
  default (``extended``, 2 threads, batches of 16: ``false_alarms_worker_default``), and a quarter
  of them again on 2 threads and with graph optimisation off (other kernels, other summation
  orders). ``false_alarms_flip_campaign_clean``: the protected model's flip campaigns' clean runs (the
  held-out tiles again and again, through the injection graph), apart: they are not distinct inputs (found in
  review: they made up half of the count, the tf32 model's among them; in audit: the range model's too).
- Range checks (flight.compute.ranges, the parameter ``range_checks``): the protected model with
  ranges learned as the worker learns them (the shipped model's ``REFERENCE_TILES`` reference
  tiles, ``ranges.DEFAULT_MARGIN``) added. ``range_detect_rate_activations``: the very flips of
  ``unchecked_detect_rate_activations`` (the same draws, replayed) judged by ``abft_ok`` and
  ``range_ok``; ``_class_only`` by the class alone. ``range_false_alarms`` among
  ``range_false_alarm_tiles``: tiles either flag fails on, over the distinct tiles ``false_alarms`` counts
  (its quarter on three settings, not two: with owned weights too; the range flip campaigns' clean runs apart,
  ``range_false_alarms_flip_campaign_clean`` [flagged, tiles])
  (``range_false_alarms_by_set``: [flagged, tiles] per set on 1 thread: tiles of uniform random
  reflectance are unlike any reference tile, and flagged as such). ``range_overhead``: as
  ``abft_overhead``, the model with both checks over the bare one.
- ``scrub_detect_latency_s`` (per flux class: ``p50_s``, ``p99_s``, ``max_s``; the same in
  ``scrub_detect_latency_s_p99``/``_p50``/``_max``): measured on the worker's own code, simulated
  time. A worker in this process (tests/model_helpers.py's bench, the shipped model installed,
  ``abft_checks`` on, the agent's class admitted), its ``time`` module replaced by a
  :class:`SimClock` for the run (the worker's code unchanged, its clock passed in; nothing
  sleeps). One bit of a byte drawn uniformly over the owned buffers of the model's session
  (``scrub_model_weight_bytes``, the checksum weights included) flips at a time uniform over a
  period, ``Worker.scrub_tick(now_s)`` runs every ``SCRUB_TICK_S`` (the loop's longest wait,
  ``IDLE_WAIT_S``); the latency runs to the tick whose step repaired it. ``SCRUB_FLIPS`` flips
  per class (SAA 30 s, high latitude 300 s, quiet 1500 s). No batch runs meanwhile: a failed
  check would scrub at once. With the class held, the latency is the period's by construction:
  this shows the scrubber keeps to its period. ``scrub_detect_latency_s_day``: in flight, from
  each owned upset of the simulated days below (the days as drawn) that the periodic scrub put
  right (not one a failed check's scrub of everything did) to that repair, with the class the agent
  predicted along the orbit (mostly quiet: the days' rate is the SAA's at every step, the prediction
  the orbit's own); ``censored``: those not yet put right when a day ended, left out.
- ``scrub_cpu_pct``: this thread's CPU time (``time.thread_time``) in ``scrub_tick`` per second
  of simulated flight, in % of one core, ticks every ``SCRUB_TICK_S`` over
  ``SCRUB_CPU_FLIGHT_S``; ``scrub_cpu_pct_busy_loop`` the same with a tick every ``SLICE_S``
  (the loop while it computes). Mostly the per-call cost at this model's size (64 KB):
  ``scrub_cpu_large_model`` times the scrubber alone over ``SCRUB_LARGE_MB`` MB of weights, per
  class (% of a core, CPU seconds per MB per pass, and whether its step budget keeps up).
- ``corrupt_results_reported_good``: tiles whose product says passed while their class differs
  from the clean one, or their confidence by > ``CONSEQUENCE``, over a simulated day
  (:func:`upset_day`). What is modelled, not measured: the truth (the harness's upset model,
  hil/profiles/radiation.py, along the TLE of hil/data/profiles/sso_550.parquet flown for a day,
  per bit; ``day_truth_vs_profile_rel`` checks it against the profile's 3 h column): the day runs
  at ``DAY_UPSET_SCALE`` times the SAA's rate (the track's peak) at every step, while the agent
  predicts its own flux class along the orbit, so its scrub period is mostly the quiet one and
  the checks, not the scrubber, must catch what lands; upsets land only in the weights the scrubber keeps (owned and golden; activations
  and results held are the HIL's, through the worker's hooks: hil/scenarios/sso_memory_upsets.toml,
  flight/compute/inject.py); one job of ``DAY_TILES_PER_STEP`` tiles per
  ``DAY_STEP_S`` step, not continuous inference (``day_compression``). What is the worker's
  own: the agent's predicted class (``radiation_estimate``), the scrub, the checks, the rerun,
  the products and their receipts. ``day_upsets`` and ``day_tiles`` say what happened
  (:class:`DayTally`; ``injected_owned_model``: the upsets in the model's own weights, not in
  the checks' sums, which make up most of the bytes kept; ``jobs_failed``: jobs that ended with no
  product), summed over ``DAY_SEEDS`` days of their own upsets (``day_by_seed``).
  ``corrupt_results_reported_good_blind``: the same days, the same upsets, with every checksum and
  range flag read as passed (:func:`checks_blind`): how many corrupt tiles the checks kept from being
  reported good, so that a 0 is a measurement (a 6 h run at 1e4 times the track's own rate, shown
  before, had no such power: it scored 0 blind as well, and is gone). What that 0 rests on is
  ``corrupt_results_trials`` (:func:`trials_of`): the jobs that, flown blind, reported a corrupt tile
  good and were the first to run on an upset present (an upset corrupts the tiles of every job
  until it is repaired, and with the checks the first job to run on it scrubs it, so neither tiles
  nor later jobs are trials), and the miss rate per trial that 0 of them still allows at 95 %
  (one-sided). A day as drawn puts few upsets in
  the model's own 3 KB (``injected_owned_model``), so ``corrupt_results_reported_good_model_weights``
  (``_blind``, ``corrupt_results_trials_model_weights``, ``day_model_weights_upsets``) flies
  ``DAY_MODEL_SEEDS`` more days with as many upsets, every one in the model's own weights: a
  stress stated apart, for the trials it gives.

``python -m bench.radiation [--seed N]``; the published figures use the default seed
(:data:`SEED`). The tolerance (:data:`flight.compute.abft.SAFETY`) was chosen from the
rounding bound and checked on seed 1, never tuned on this seed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from flight.agent.compute import radiation_estimate
from flight.compute import abft, ranges
from flight.compute import protocol as cp
from flight.compute import worker as worker_module
from flight.compute.checks import FAILED, PASSED, UNCHECKED
from flight.compute.inject import CONSEQUENCE, activation_tensors, draw_byte, flip_bit, owned_sites, with_hooks
from flight.compute.package import shipped_reference_inputs
from flight.compute.providers import (
    checksum_layout_nchwc,
    open_session,
    owned_weights_options,
    session_options_for,
)
from flight.compute.scrub import WeightScrubber, scrub_period_s
from flight.compute.usecase.cloud import generate_tiles
from flight.compute.usecase.shipped import (
    MODEL_FILE,
    MODEL_NAME,
    MODELS_DIR,
    load_held_out,
)
from flight.compute.worker import ACTIVE
from flight.link.definitions import DICTIONARY, Admission, FluxClass, JobKind
from flight.orbit import Orbit, geodetic_from_teme
from flight.orbit.saa import ESTIMATE
from hil.profiles.format import read_profile
from hil.profiles.radiation import RadiationParams, radiation_along_track

SEED = 17  # issue 17; the tolerance was checked on seed 1
FLIP_BATCH = 16
FLIPS = 6000  # weights and activations, half each
UNCHECKED_FLIPS = 1000  # each, weights and activations
BY_SIZE_FLIPS = 10_000  # each, weights and activations, the site drawn in proportion to its size: the headline
PAST_CHECKS = ("probabilities", "cloud_fraction")  # outputs made past the last checked node: the compare's
PAST_FLIPS = 400
TF32_FLIPS = 2000
OVERHEAD_BATCH = 64
OVERHEAD_PAIRS = 60
OVERHEAD_RUNS = 10
OVERHEAD_SETTINGS = tuple((kind, threads, batch) for kind in ("owned", "all") for threads in (1, 2) for batch in (64, 16))
GENERATED_TILES = 100_000  # each its own draw of the generator
RANDOM_TILES = 2048
OUTPUTS = ("logits", "probabilities", "cloud_fraction")
CPU_ONLY = ("CPUExecutionProvider",)
SCRUB_CLASSES = (FluxClass.SAA, FluxClass.HIGH_LATITUDE, FluxClass.QUIET)
SCRUB_FLIPS = 1000  # per flux class, one at a time
SCRUB_TICK_S = 1.0  # flight.compute.worker.IDLE_WAIT_S: the longest the loop goes between two scrub_tick calls
SCRUB_LARGE_MB = 64  # scrub_cpu_large: a model of realistic size (16 M float32 weights)
SCRUB_CPU_FLIGHT_S = 6000.0  # simulated flight per class for scrub_cpu_pct: 4 passes at 1500 s, 200 at 30 s
SSO_PERIOD_S = 5739.0  # the profile's orbit (hil/data/profiles/sso_550.parquet, metadata orbit.period_s)
DAY_PROFILE = Path(__file__).resolve().parent.parent / "hil" / "data" / "profiles" / "sso_550.parquet"
DAY_S = 86400.0
DAY_STEP_S = 60.0
DAY_UPSET_SCALE = 100.0  # x the harness's upset rate in the SAA (the track's peak), all day
DAY_SEEDS = 3  # the day flown this many times, each with its own upsets (seed, seed + 100, ...)
DAY_MODEL_SEEDS = 2  # and this many days with every upset in the model's own weights (upset_day's model_only)
DAY_TILES_PER_STEP = 16  # held-out tiles run per step (the 800 in turn)
DAY_BATCH = 8  # the worker's batch (Admit.batch): two batches a step

CHECKED_WEIGHTS = ("w1", "b1", "w2", "b2", "w3", "b3", "wh", "bh")
UNCHECKED_WEIGHTS = ("band_mean", "band_std")
CHECKED_ACTIVATIONS = ("a1", "a2", "pixel_logit", "logits")
UNCHECKED_ACTIVATIONS = ("xn", "h1", "h2", "pixel_p", "hmean", "z")


# -- model surgery for injection (test copies; the worker's own hooks are flight/compute/inject.py) --


def weights_as_inputs(model: onnx.ModelProto, names: tuple[str, ...]) -> onnx.ModelProto:
    """A copy of ``model`` whose initializers ``names`` are graph inputs: feed a corrupted copy per run."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    kept = [t for t in out.graph.initializer if t.name not in names]
    moved = [t for t in out.graph.initializer if t.name in names]
    if len(moved) != len(names):
        raise ValueError(f"initializers not found: {sorted(set(names) - {t.name for t in moved})}")
    del out.graph.initializer[:]
    out.graph.initializer.extend(kept)
    for t in moved:
        out.graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    return out


def consequential(clean: dict[str, np.ndarray], faulty: dict[str, np.ndarray], threshold: float = CONSEQUENCE) -> np.ndarray:
    """Per tile: did the fault move a probability or the cloud fraction by > ``threshold``, or the class?

    ``threshold=inf``: the class alone (or a non-finite output), the usual definition of a
    silent data corruption in classifiers.
    """
    hit = np.zeros(len(clean["probabilities"]), bool)
    for name in ("probabilities", "cloud_fraction"):
        a, b = clean[name], faulty[name]
        moved = ~np.isfinite(b) | (np.abs(b - a) > threshold)
        hit |= moved.reshape(len(hit), -1).any(axis=1)
    hit |= clean["probabilities"].argmax(axis=1) != np.nan_to_num(faulty["probabilities"], nan=-1.0).argmax(axis=1)
    return hit


# -- injection ----------------------------------------------------------------------------------


@dataclass
class Tally:
    """Flips injected, and per consequence threshold (1e-3, 1e-2, class only): how many mattered, how many were caught."""

    thresholds: tuple[float, ...] = (CONSEQUENCE, 1e-2, float("inf"))
    injected: int = 0
    consequential: list[int] = field(default_factory=lambda: [0, 0, 0])
    detected: list[int] = field(default_factory=lambda: [0, 0, 0])
    flagged_harmless: int = 0  # flips that mattered at no threshold, flagged all the same
    clean_flags: int = 0  # tiles flagged in the clean runs made for comparison
    clean_tiles: int = 0
    missed: list[str] = field(default_factory=list)
    flags: tuple[str, ...] = (abft.OUTPUT,)  # a tile passes when all of these are true

    def add(self, clean: dict[str, np.ndarray], faulty: dict[str, np.ndarray], what: str) -> None:
        self.injected += 1
        self.clean_tiles += len(clean[abft.OUTPUT])
        self.clean_flags += int((~passed(clean, self.flags)).sum())
        flagged = ~passed(faulty, self.flags)
        for i, threshold in enumerate(self.thresholds):
            hit = consequential(clean, faulty, threshold)
            if hit.any():
                self.consequential[i] += 1
                if flagged[hit].all():
                    self.detected[i] += 1
                elif i == 0 and len(self.missed) < 5:
                    self.missed.append(what)
            elif i == 0 and flagged.any():
                self.flagged_harmless += 1

    def rate(self, i: int = 0) -> float | None:
        return round(self.detected[i] / self.consequential[i], 4) if self.consequential[i] else None

    def merge(self, other: Tally) -> Tally:
        return Tally(self.thresholds, self.injected + other.injected,
                     [a + b for a, b in zip(self.consequential, other.consequential)],
                     [a + b for a, b in zip(self.detected, other.detected)],
                     self.flagged_harmless + other.flagged_harmless,
                     self.clean_flags + other.clean_flags, self.clean_tiles + other.clean_tiles,
                     (self.missed + other.missed)[:5], self.flags)


def passed(outputs: dict[str, np.ndarray], flags: tuple[str, ...]) -> np.ndarray:
    """Per tile: every flag of ``flags`` true (abft_ok, and range_ok where judged by both)."""
    return np.logical_and.reduce([np.asarray(outputs[f], bool) for f in flags])


class Injector:
    """One session of a protected model with every weight an input and every tensor of interest hooked."""

    def __init__(self, protected: onnx.ModelProto, weights: tuple[str, ...], activations: tuple[str, ...],
                 providers: Sequence[Any] = CPU_ONLY):
        model = with_hooks(weights_as_inputs(protected, weights), activations)
        options = session_options_for(1)
        self.session = ort.InferenceSession(model.SerializeToString(), options, providers=list(providers))
        init = {t.name: onnx.numpy_helper.to_array(t) for t in protected.graph.initializer}
        self.weights = {name: init[name].copy() for name in weights}
        self.activations = activations
        flags = [abft.OUTPUT] + [ranges.OUTPUT for o in protected.graph.output if o.name == ranges.OUTPUT]
        self.outputs = [*OUTPUTS, *flags, *[a for a in activations if a not in OUTPUTS]]

    def run(self, tiles: np.ndarray, masks: dict[str, np.ndarray], values: dict[str, float],
            weights: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        feed: dict[str, np.ndarray] = {"tiles": tiles, **(weights or self.weights)}
        for name in self.activations:
            feed[name + "/mask"] = masks[name]
            feed[name + "/value"] = np.array([values.get(name, 0.0)], np.float32)
        return dict(zip(self.outputs, self.session.run(self.outputs, feed)))

    def campaign(self, rng: np.random.Generator, pool: np.ndarray, n: int, kind: str,
                 sites: tuple[str, ...], flags: tuple[str, ...] = (abft.OUTPUT,), by_element: bool = False) -> Tally:
        """``n`` flips, each on a fresh batch of ``FLIP_BATCH`` tiles from ``pool``: in weights or activations,
        judged by ``flags``; the tensor drawn uniformly among ``sites``, or (``by_element``) in proportion
        to its elements, as an upset in memory lands."""
        tally = Tally(flags=flags)
        for _ in range(n):
            tiles = pool[rng.choice(len(pool), FLIP_BATCH, replace=False)]
            site = None if by_element else sites[rng.integers(len(sites))]
            masks = {a: None for a in self.activations}
            clean = self.run(tiles, self._masks(masks), {})
            if site is None:
                sizes = np.array([(self.weights[x] if kind == "weight" else clean[x]).size for x in sites], float)
                site = sites[int(rng.choice(len(sites), p=sizes / sizes.sum()))]
            bit = int(rng.integers(32))
            if kind == "weight":
                w = self.weights[site]
                k = int(rng.integers(w.size))
                bad = dict(self.weights)
                bad[site] = w.copy()
                bad[site].flat[k] = flip_bit(w.flat[k], bit)
                faulty = self.run(tiles, self._masks(masks), {}, bad)
                what = f"{site}[{k}] bit {bit}: {float(w.flat[k]):.8g} -> {float(bad[site].flat[k]):.8g}"
            else:
                value = clean[site]
                k = int(rng.integers(value.size))
                mask = np.zeros(value.shape, bool)
                mask.flat[k] = True
                masks = self._masks({**masks, site: mask})
                new = flip_bit(value.flat[k], bit)
                faulty = self.run(tiles, masks, {site: float(new)})
                where = ",".join(str(int(i)) for i in np.unravel_index(k, value.shape))
                what = f"{site}[{where}] bit {bit}: {float(value.flat[k]):.8g} -> {float(new):.8g}"
            tally.add(clean, faulty, what)
        return tally

    def _masks(self, given: dict[str, np.ndarray | None]) -> dict[str, np.ndarray]:
        """A one-element false mask (Where broadcasts it) for every site but the one given."""
        return {a: given[a] if given.get(a) is not None else self._no_fault for a in self.activations}

    _no_fault = np.zeros(1, bool)


def flip_campaigns(protected: onnx.ModelProto, pool: np.ndarray, seed: int, n: int, unchecked: int,
                   ranged: onnx.ModelProto | None = None, providers: Sequence[Any] = CPU_ONLY,
                   by_size: int = 0) -> dict[str, Tally]:
    """The flip campaigns on ``protected``; with ``ranged`` (``protected`` with range checks too) the
    unchecked activations' flips again, the same draws, on it and judged by abft_ok and range_ok
    (``"range_activations"``). ``providers``: onnxruntime's, for the sessions (bench/abft_ort_gpu.py).
    ``by_size``: that many flips each in weights and in activations, drawn over every site in
    proportion to its size (``"weights_by_size"``, ``"activations_by_size"``)."""
    rng = np.random.default_rng(seed)
    # Every tensor the model's own nodes make: the checked nodes' outputs, those between them, and those
    # past the last checks (the probabilities, the cloud fraction) and in between (the pooled means).
    every = activation_tensors(protected)
    inj = Injector(protected, CHECKED_WEIGHTS + UNCHECKED_WEIGHTS, every, providers)
    out = {
        "weights": inj.campaign(rng, pool, n // 2, "weight", CHECKED_WEIGHTS),
        "activations": inj.campaign(rng, pool, n - n // 2, "activation", CHECKED_ACTIVATIONS),
    }
    if unchecked:
        out["unchecked_weights"] = inj.campaign(rng, pool, unchecked, "weight", UNCHECKED_WEIGHTS)
        state = rng.bit_generator.state
        out["unchecked_activations"] = inj.campaign(rng, pool, unchecked, "activation", UNCHECKED_ACTIVATIONS)
        if ranged is not None:
            replay = np.random.default_rng()
            replay.bit_generator.state = state
            both = Injector(ranged, CHECKED_WEIGHTS + UNCHECKED_WEIGHTS, every)
            out["range_activations"] = both.campaign(replay, pool, unchecked, "activation", UNCHECKED_ACTIVATIONS,
                                                     flags=(abft.OUTPUT, ranges.OUTPUT))
        # Every activation, drawn by element: what an upset anywhere in them meets (found in review: the
        # headline's activations are the checked nodes' outputs, under half of the elements).
        rng_all = np.random.default_rng(seed + 7000)
        state = rng_all.bit_generator.state
        out["all_activations"] = inj.campaign(rng_all, pool, unchecked, "activation", every, by_element=True)
        if ranged is not None:
            rng_all.bit_generator.state = state
            out["range_all_activations"] = both.campaign(rng_all, pool, unchecked, "activation", every,
                                                         flags=(abft.OUTPUT, ranges.OUTPUT), by_element=True)
        # The outputs past the last checks, a few numbers a tile: drawn by element above they are seldom hit.
        out["past_checks"] = inj.campaign(np.random.default_rng(seed + 9000), pool, PAST_FLIPS, "activation",
                                          PAST_CHECKS)
    if by_size:  # where an upset lands: any weight of the model's own, any element of any activation
        out["weights_by_size"] = inj.campaign(np.random.default_rng(seed + 11000), pool, by_size, "weight",
                                              CHECKED_WEIGHTS + UNCHECKED_WEIGHTS, by_element=True)
        out["activations_by_size"] = inj.campaign(np.random.default_rng(seed + 12000), pool, by_size, "activation",
                                                  every, by_element=True)
    return out


# -- clean inputs and false alarms --------------------------------------------------------------


def clean_tiles(seed: int, generated: int = GENERATED_TILES, random_tiles: int = RANDOM_TILES) -> np.ndarray:
    """Held-out tiles, procedural ones (each its own draw: found in audit, 8 orientations of 12,400
    draws made up most of the count, and a rotation only sums the same values in another order),
    uniform random ones and flat ones (float32)."""
    held = load_held_out().tiles.astype(np.float32)
    top = float(held.max())
    gen = generate_tiles(generated, seed + 1000)[0].astype(np.float32)
    rng = np.random.default_rng(seed + 2000)
    uniform = rng.uniform(0.0, top, size=(random_tiles, *held.shape[1:])).astype(np.float32)
    flat = np.stack([np.full(held.shape[1:], v, np.float32) for v in (0.0, top, 1.0)])
    return np.ascontiguousarray(np.concatenate([held, gen, uniform, flat]))


def count_false_alarms(session: ort.InferenceSession, tiles: np.ndarray, batch: int = 64,
                       flags: tuple[str, ...] = (abft.OUTPUT,)) -> int:
    """Tiles of ``tiles`` with any of ``flags`` false."""
    flagged = 0
    for start in range(0, len(tiles), batch):
        got = session.run(list(flags), {"tiles": tiles[start:start + batch]})
        flagged += int((~np.logical_and.reduce(got)).sum())
    return flagged


def campaign_clean(tallies: Iterable[Tally], flags: tuple[str, ...]) -> list[int]:
    """[flagged, tiles] of the clean runs of those flip campaigns of ``tallies`` judged by ``flags``: the
    protected model's (abft_ok) apart from the model with range checks too (abft_ok and range_ok; found in
    audit: the latter's every-activation campaign was counted in the protected model's figure, not its own)."""
    judged = [t for t in tallies if t.flags == flags]
    return [sum(t.clean_flags for t in judged), sum(t.clean_tiles for t in judged)]


def range_false_alarm_figures(ranged: bytes, tiles: np.ndarray, part: np.ndarray,
                              flips: Iterable[Tally]) -> dict[str, object]:
    """False alarms of the model with both checks (a tile flagged when abft_ok or range_ok is false) over:
    :func:`clean_tiles` on 1 thread (and per set); ``part`` (not every tile) on 2 threads, with optimisation
    off and on owned weights; and the clean runs of the range flip campaigns (those of ``flips`` judged by both
    flags), which repeat held-out tiles (so not the distinct tiles ``false_alarms`` counts: a review). The
    sessions at ``all`` open the plain-layout model (the worker's at ``all`` would be its NCHWc one)."""
    flags = (abft.OUTPUT, ranges.OUTPUT)
    one = open_session(ranged, ["CPUExecutionProvider"], threads=1).session
    n_held, n_gen = len(load_held_out().tiles), GENERATED_TILES
    sets = {"held_out": tiles[:n_held], "generated": tiles[n_held:n_held + n_gen],
            "random_reflectance": tiles[n_held + n_gen:len(tiles) - 3], "flat": tiles[len(tiles) - 3:]}
    by_set = {name: count_false_alarms(one, chunk, flags=flags) for name, chunk in sets.items()}
    two = open_session(ranged, ["CPUExecutionProvider"], threads=2).session
    plain = ort.InferenceSession(ranged, session_options_for(1, optimization="disable"),
                                 providers=["CPUExecutionProvider"])
    owned = cpu_session(ranged, "owned", 2)
    other = (count_false_alarms(two, part, flags=flags) + count_false_alarms(plain, part, flags=flags)
             + count_false_alarms(owned[0], part, 16, flags=flags))
    return {
        "range_false_alarms": sum(by_set.values()) + other,
        "range_false_alarm_tiles": len(tiles) + 3 * len(part),
        # apart, as false_alarms_flip_campaign_clean: the held-out tiles again and again (found in audit: they were
        # added to the count above, some 16,000 repeats of the same tiles)
        "range_false_alarms_flip_campaign_clean": campaign_clean(flips, flags),
        "range_false_alarms_by_set": {name: [flagged, len(sets[name])] for name, flagged in by_set.items()},
    }


# -- overhead -----------------------------------------------------------------------------------


def cpu_session(data: bytes, kind: str, threads: int,
                providers: Sequence[Any] = CPU_ONLY) -> tuple[ort.InferenceSession, object]:
    """A CPU session on ``data`` as the worker opens one: ``kind`` "owned" (its initializers
    buffers the caller keeps, as with ``weights_scrub``), else the optimisation level. Keep
    the second value as long as the session: the owned buffers. ``providers``: another
    provider's session, made the same way (bench/abft_ort_gpu.py)."""
    if kind != "owned":
        return ort.InferenceSession(data, session_options_for(threads, optimization=kind),
                                    providers=list(providers)), None
    model = onnx.load_from_string(data)
    arrays = {t.name: np.ascontiguousarray(onnx.numpy_helper.to_array(t)).copy() for t in model.graph.initializer}
    options, values = owned_weights_options(arrays, threads)
    return ort.InferenceSession(data, options, providers=list(providers)), (arrays, values)


def overhead(bare: bytes, protected: bytes, tiles: np.ndarray, optimization: str = "all", threads: int = 1,
             batch: int = OVERHEAD_BATCH, providers: Sequence[Any] = CPU_ONLY, feed: str = "tiles",
             pairs: int = OVERHEAD_PAIRS, runs: int = OVERHEAD_RUNS) -> float:
    """Median over ``pairs`` interleaved pairs of (protected time / bare time), minus 1: ``runs``
    batches of ``tiles`` each, fed as the input ``feed``."""
    sessions = [cpu_session(bare, optimization, threads, providers), cpu_session(protected, optimization, threads,
                                                                                  providers)]
    s_bare, s_prot = (session for session, _owned in sessions)
    batches = [tiles[i:i + batch] for i in range(0, len(tiles) - batch + 1, batch)]

    def timed(session: ort.InferenceSession, first: int) -> float:
        t0 = time.perf_counter()
        for j in range(runs):
            session.run(None, {feed: batches[(first + j) % len(batches)]})
        return time.perf_counter() - t0

    for s in (s_bare, s_prot):
        timed(s, 0)  # warm-up
    ratios = []
    for i in range(pairs):
        if i % 2:
            p, b = timed(s_prot, i), timed(s_bare, i)
        else:
            b, p = timed(s_bare, i), timed(s_prot, i)
        ratios.append(p / b)
    return float(np.median(ratios)) - 1.0


def outputs_read(model: onnx.ModelProto, tensors: list[str]) -> onnx.ModelProto:
    """A copy of ``model`` whose ``tensors`` are also read by a Shape (no data read), the Shapes
    joined into one more output: what a check costs before it computes anything, the fusions
    onnxruntime loses. Made in reverse, so that onnxruntime's order (a depth-first walk back
    from the outputs, the newest input first) runs each Shape before the activation after
    its tensor, as a check runs, and the activation can run in place."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    shapes = [name + "/shape" for name in tensors]
    for name, shape in reversed(list(zip(tensors, shapes))):
        out.graph.node.append(helper.make_node("Shape", [name], [shape], name=shape))
    out.graph.node.append(helper.make_node("Concat", shapes, ["read/shapes"], name="read/shapes", axis=0))
    out.graph.output.append(helper.make_tensor_value_info("read/shapes", TensorProto.INT64, [None]))
    return out


def tensors_summed(model: onnx.ModelProto, reads: dict[str, str]) -> onnx.ModelProto:
    """A copy of ``model`` that also sums each tensor of ``reads`` per sample and channel over its
    positions, with the reader named there ("ReduceSum", the fastest read of a plain tensor:
    summing the channels too took longer; or "GlobalAveragePool", which reads onnxruntime's NCHWc
    layout), the sums joined into one more output, each run right after its tensor is made (as
    :func:`outputs_read`): what reading those tensors once costs, and nothing else."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    inferred = onnx.shape_inference.infer_shapes(model).graph
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in (*inferred.value_info, *inferred.output)}
    sums = [name + "/sum" for name in reads]
    for (name, reader), total in reversed(list(zip(reads.items(), sums))):
        if reader == "GlobalAveragePool":
            out.graph.node.append(helper.make_node(reader, [name], [name + "/mean"], name=name + "/mean"))
            out.graph.node.append(helper.make_node("Flatten", [name + "/mean"], [total], name=total, axis=1))
            continue
        kept = min(2, ranks[name] - 1)  # [N, C] of [N, C, positions...]; [N, 1] of [N, features]
        axes = helper.make_tensor(name + "/axes", TensorProto.INT64, [ranks[name] - kept],
                                  list(range(kept, ranks[name])))
        out.graph.initializer.append(axes)
        out.graph.node.append(helper.make_node("ReduceSum", [name, axes.name], [total], name=total,
                                               keepdims=int(kept == 1)))
    out.graph.node.append(helper.make_node("Concat", sums, ["read/sums"], name="read/sums", axis=1))
    out.graph.output.append(helper.make_tensor_value_info("read/sums", TensorProto.FLOAT, [None, None]))
    return out


def checks_reads(protected: onnx.ModelProto) -> dict[str, str]:
    """The model's own tensors the checks of ``protected`` read (outputs, inputs, the model's own means
    they reuse), in the order the model makes them, each with the reader :func:`tensors_summed` should
    use: a GlobalAveragePool where a check reads it with a pooling (a GlobalAveragePool, or an
    AveragePool over runs of rows: both read onnxruntime's NCHWc layout), else a ReduceSum."""
    added = [n for n in protected.graph.node if n.name.startswith(abft.PREFIX)]
    own = [t for n in protected.graph.node if not n.name.startswith(abft.PREFIX) for t in n.output]
    read = {t for n in added for t in n.input if t in own}
    pools = ("GlobalAveragePool", "AveragePool")
    return {t: "GlobalAveragePool" if any(n.op_type in pools and t in n.input for n in added)
            else "ReduceSum" for t in own if t in read}


def overhead_figures(bare: bytes, protected: onnx.ModelProto, protected_all: onnx.ModelProto,
                     tiles: np.ndarray) -> dict[str, object]:
    """``protected`` as the worker makes it for sessions at ``extended`` (owned weights), ``protected_all``
    for sessions at ``all`` (abft.protect's ``nchwc`` where onnxruntime blocks Conv outputs there)."""
    data, data_all = protected.SerializeToString(), protected_all.SerializeToString()
    model = onnx.load_from_string(bare)
    floor = outputs_read(model, [c["output"] for c in abft.describe(protected)["checks"]]).SerializeToString()
    block = int(abft.describe(protected_all).get("nchwc_block") or 0)
    blocked = block > 0
    # The read floor of checks that read the model's own tensors (recompute_inputs off): the recomputed
    # copies are reads of their own, which abft_overhead_without_recompute leaves out.
    own_reads = [abft.protect(model, recompute_inputs=False), abft.protect(model, nchwc=block, recompute_inputs=False)]
    read, read_all = (tensors_summed(model, checks_reads(p)).SerializeToString() for p in own_reads)
    variants = {"plain": data, "nchwc": data_all if blocked else abft.protect(model, nchwc=True).SerializeToString()}
    by_layout = {f"{layout}/{level}": round(overhead(bare, variant, tiles, level), 4)
                 for layout, variant in variants.items() for level in ("extended", "all")}
    return {
        "abft_overhead": by_layout["nchwc/all" if blocked else "plain/all"],
        "abft_overhead_extended": by_layout["plain/extended"],
        "abft_overhead_by_setting": {f"{kind}/{threads}thread/batch{batch}":
                                     round(overhead(bare, data_all if kind == "all" else data, tiles, kind, threads,
                                                    batch), 4)
                                     for kind, threads, batch in OVERHEAD_SETTINGS},
        "abft_overhead_floor": round(overhead(bare, floor, tiles, "owned"), 4),
        "abft_overhead_floor_all": round(overhead(bare, floor, tiles, "all"), 4),
        "abft_overhead_read_floor": round(overhead(bare, read, tiles, "owned"), 4),
        "abft_overhead_read_floor_all": round(overhead(bare, read_all, tiles, "all"), 4),
        "abft_overhead_without_recompute": round(overhead(bare, own_reads[1].SerializeToString(), tiles, "all"), 4),
        "abft_overhead_extended_without_recompute": round(overhead(bare, own_reads[0].SerializeToString(), tiles,
                                                                   "extended"), 4),
        "abft_nchwc_at_all": blocked,
        "abft_overhead_by_layout": by_layout,
    }


# -- wide layers -------------------------------------------------------------------------------

WIDE_INPUTS = ("normal", "non-negative", "constant 1.7", "constant 0.1", "wide range", "sparse")
WIDE_FLIPS = 40  # per layer: sign and lowest exponent bit, alternately
WIDE_BATCH = 8
WIDE_OVERHEAD_BATCH = 16
WIDE_OVERHEAD_PAIRS = 20  # of WIDE_OVERHEAD_RUNS batches each: a batch of the largest layer takes about 20 ms here
WIDE_OVERHEAD_RUNS = 5


def wide_layers(rng: np.random.Generator) -> dict[str, tuple[onnx.ModelProto, tuple[int, ...]]]:
    """Single layers wider than the shipped model's, weights drawn as initialisers draw them
    (normal, scaled by 1/sqrt(fan-in)): the checks' tolerance grows with a layer's size, a flip's
    effect does not, so these are where a loose tolerance shows."""
    def f(*shape: int, scale: float = 1.0) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    def model(nodes, inits, shape):
        graph = helper.make_graph(nodes, "wide", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                                  [onnx.numpy_helper.from_array(v, k) for k, v in inits.items()])
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 8
        return m

    relu = helper.make_node("Relu", ["x"], ["r"])
    return {
        "conv_64_64_3x3_32px": (model([helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1])],
                                      {"w": f(64, 64, 3, 3, scale=1 / 24), "b": f(64, scale=0.1)}, ["N", 64, 32, 32]),
                                (64, 32, 32)),
        "relu_conv_64_64_3x3_32px": (model([relu, helper.make_node("Conv", ["r", "w", "b"], ["y"], pads=[1, 1, 1, 1])],
                                           {"w": f(64, 64, 3, 3, scale=1 / 24), "b": f(64, scale=0.1)},
                                           ["N", 64, 32, 32]), (64, 32, 32)),
        "conv_3_64_3x3_64px": (model([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
                                     {"w": f(64, 3, 3, 3, scale=0.3)}, ["N", 3, 64, 64]), (3, 64, 64)),
        "relu_conv_256_256_3x3_8px": (model([relu, helper.make_node("Conv", ["r", "w"], ["y"], pads=[1, 1, 1, 1])],
                                            {"w": f(256, 256, 3, 3, scale=1 / 48)}, ["N", 256, 8, 8]), (256, 8, 8)),
        "relu_gemm_1024_128": (model([relu, helper.make_node("Gemm", ["r", "w", "b"], ["y"])],
                                     {"w": f(1024, 128, scale=1 / 32), "b": f(128, scale=0.1)}, ["N", 1024]), (1024,)),
        "gemm_4096_256": (model([helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)],
                                {"w": f(256, 4096, scale=1 / 64)}, ["N", 4096]), (4096,)),
        "relu_conv_512_512_3x3_7px": (model([relu, helper.make_node("Conv", ["r", "w"], ["y"], pads=[1, 1, 1, 1])],
                                            {"w": f(512, 512, 3, 3, scale=1 / 68)}, ["N", 512, 7, 7]), (512, 7, 7)),
    }


def wide_inputs(kind: str, n: int, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    normal = rng.standard_normal((n, *shape))
    x = {"normal": normal, "non-negative": np.abs(normal), "constant 1.7": np.full((n, *shape), 1.7),
         "constant 0.1": np.full((n, *shape), 0.1), "wide range": normal * 10.0 ** rng.uniform(-3, 3, (n, *shape)),
         "sparse": normal * (rng.random((n, *shape)) < 0.02)}[kind]
    return x.astype(np.float32)


def wide_layer_figures(seed: int) -> dict[str, object]:
    """Per layer of :func:`wide_layers`: clean tiles flagged (every kind of :data:`WIDE_INPUTS`,
    batches of 1 and 16), and of :data:`WIDE_FLIPS` flips in its weight (the owned buffer of an
    owned-weight session, as the worker runs it, flipped in place and put back) the samples
    whose output moved by more than 1e-3 of its scale, and of those the ones flagged; the form of
    its check; and ``abft_wide_overhead``, what its check costs as :func:`overhead` measures it
    (batches of :data:`WIDE_OVERHEAD_BATCH` normal inputs, 1 thread) with owned weights (``owned``)
    and at ``all``, each on the model the worker makes for it: layers whose compute, not their
    reads, sets their time, unlike the shipped model's."""
    rng = np.random.default_rng(seed)
    timing = np.random.default_rng([seed, 2])  # the inputs timed: the draws above stay as they were
    out: dict[str, object] = {}
    costs: dict[str, dict[str, float]] = {}
    flagged = tiles = moved_all = caught_all = 0
    for name, (model, shape) in wide_layers(rng).items():
        protected = abft.protect(model)
        data = protected.SerializeToString()
        session, (arrays, _values) = cpu_session(data, "owned", 1)  # the arrays it computes from
        bad = seen = 0
        for kind in WIDE_INPUTS:
            for batch in (1, 16):
                x = wide_inputs(kind, 16, shape, rng)
                for i in range(0, len(x), batch):
                    ok = session.run([abft.OUTPUT], {"x": x[i:i + batch]})[0]
                    bad, seen = bad + int((~ok).sum()), seen + ok.size
        x = wide_inputs("normal", WIDE_BATCH, shape, rng)
        clean = session.run(["y"], {"x": x})[0]
        scale = np.abs(clean).max()
        w = arrays["w"]
        moved = caught = 0
        for j in range(WIDE_FLIPS):
            index = tuple(int(rng.integers(0, d)) for d in w.shape)
            saved = w[index]
            w.view(np.uint32)[index] ^= np.uint32(1 << (31 if j % 2 == 0 else 23))
            y, ok = session.run(["y", abft.OUTPUT], {"x": x})
            w[index] = saved
            hit = np.abs(y - clean).reshape(len(x), -1).max(axis=1) > 1e-3 * scale
            moved, caught = moved + int(hit.sum()), caught + int((hit & ~ok).sum())
        check = abft.describe(protected)["checks"][0]
        out[name] = {"false_alarms": [bad, seen], "flips_moved": moved, "flips_caught": caught,
                     "rtol": check["rtol"], "form": check["form"]}
        x = wide_inputs("normal", 4 * WIDE_OVERHEAD_BATCH, shape, timing)
        made = {"owned": data, "all": abft.protect(model, nchwc=checksum_layout_nchwc("all")).SerializeToString()}
        costs[name] = {level: round(overhead(model.SerializeToString(), made[level], x, level,
                                             batch=WIDE_OVERHEAD_BATCH, feed="x", pairs=WIDE_OVERHEAD_PAIRS,
                                             runs=WIDE_OVERHEAD_RUNS), 4)
                       for level in made}
        flagged, tiles, moved_all, caught_all = flagged + bad, tiles + seen, moved_all + moved, caught_all + caught
    return {"abft_wide_layers": out, "abft_wide_overhead": costs, "abft_wide_false_alarms": [flagged, tiles],
            "abft_wide_detect_rate": round(caught_all / moved_all, 4) if moved_all else None}  # none moved: no rate


# -- whole models by width ------------------------------------------------------------------------

WIDTHS = (32, 64, 128)
WIDTH_TILE_PX = 64
WIDTH_BATCH = 16
WIDTH_OVERHEAD_PAIRS = 15
WIDTH_WINDOW_S = 0.3  # each timed run of a pair at least this long: a batch at width 32 takes about 15 ms here
WIDTH_CLEAN_BATCHES = 8  # per kind of input (normal, non-negative): 256 tiles a width
WIDTH_FLIPS = 256  # per width, each on the same WIDTH_FLIP_BATCH tiles: one in 15 to 30 mattered
WIDTH_FLIP_BATCH = 8


def model_of_width(width: int, rng: np.random.Generator, px: int) -> tuple[onnx.ModelProto, int]:
    """A small CNN classifier (four 3x3 Convs with Relus, two of stride 2, ``width`` channels then twice
    that, a global average pool and a Gemm head) on ``px`` x ``px`` tiles of 4 bands, weights drawn as
    initialisers draw them (normal, He scaling), not trained: for what the checks cost as a model's
    arithmetic grows against what it moves through memory, the shipped model (under a thousand weights,
    16 x 16 tiles) being the extreme. Returns it and its Convs' multiply-adds a tile."""
    def f(*shape: int, scale: float) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    nodes, inits, macs, side = [], {}, 0, px
    layers = (("x", "h1", 4, width, 1), ("h1", "h2", width, width, 2), ("h2", "h3", width, 2 * width, 2),
              ("h3", "h4", 2 * width, 2 * width, 1))
    for x, h, c_in, c_out, stride in layers:
        inits[h + "_w"], inits[h + "_b"] = f(c_out, c_in, 3, 3, scale=np.sqrt(2.0 / (9 * c_in))), f(c_out, scale=0.05)
        nodes += [helper.make_node("Conv", [x, h + "_w", h + "_b"], [h + "_a"], pads=[1, 1, 1, 1], strides=[stride] * 2),
                  helper.make_node("Relu", [h + "_a"], [h])]
        side = (side + 2 - 3) // stride + 1
        macs += inits[h + "_w"].size * side * side
    inits["head_w"], inits["head_b"] = f(2, 2 * width, scale=0.1), f(2, scale=0.1)
    nodes += [helper.make_node("GlobalAveragePool", ["h4"], ["pooled"]),
              helper.make_node("Flatten", ["pooled"], ["features"], axis=1),
              helper.make_node("Gemm", ["features", "head_w", "head_b"], ["logits"], transB=1),
              helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)]
    graph = helper.make_graph(nodes, f"width_{width}",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, px, px])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2])],
                              [onnx.numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model, macs


def width_figures(seed: int, widths: Sequence[int] = WIDTHS, px: int = WIDTH_TILE_PX,
                  pairs: int = WIDTH_OVERHEAD_PAIRS, window_s: float = WIDTH_WINDOW_S,
                  clean_batches: int = WIDTH_CLEAN_BATCHES, flips: int = WIDTH_FLIPS) -> dict[str, object]:
    """Per width of ``widths`` (:func:`model_of_width`), ``abft_overhead_by_width``:

    - what the checks cost the whole model as :func:`overhead` measures the headline (1 thread, the
      median over ``pairs`` interleaved pairs; batches of :data:`WIDTH_BATCH` tiles of normal noise,
      as many to a run as fill ``window_s``), at ``all`` (the headline's setting), ``extended``, and
      with owned weights (``owned``, at ``extended``: the worker's default, both sessions so);
    - its Convs' multiply-adds a tile;
    - ``false_alarms``: [flagged, tiles] over ``clean_batches`` batches of normal noise and of its
      absolute value, run as the worker runs owned weights;
    - ``flips`` flips of a bit drawn uniformly over every byte of the model's weights (:func:`draw_byte`,
      as an upset lands; the Convs hold nearly all of them), in the owned buffers the session computes
      from, flipped in place and put back, each on the same :data:`WIDTH_FLIP_BATCH` tiles: judged as the
      headline's are (:func:`consequential`: a probability moved by more than ``CONSEQUENCE`` or the
      class changed, on some tile), ``flips_consequential``, of those ``flips_detected`` (every such
      tile flagged), and ``flagged_harmless`` (flagged, though nothing moved that far).

    Generated models on noise, timed here; not a model the store ships."""
    rng = np.random.default_rng([seed, 3])
    by_width: dict[str, dict[str, object]] = {}
    for width in widths:
        model, macs = model_of_width(width, rng, px)
        bare = model.SerializeToString()
        extended = abft.protect(model).SerializeToString()
        made = {"all": abft.protect(model, nchwc=checksum_layout_nchwc("all")).SerializeToString(),
                "extended": extended, "owned": extended}
        timed = rng.standard_normal((4 * WIDTH_BATCH, 4, px, px)).astype(np.float32)
        probe, _ = cpu_session(bare, "all", 1)
        probe.run(None, {"x": timed[:WIDTH_BATCH]})
        t0 = time.perf_counter()
        probe.run(None, {"x": timed[:WIDTH_BATCH]})
        runs = max(2, math.ceil(window_s / max(time.perf_counter() - t0, 1e-6)))
        costs = {level: round(overhead(bare, made[level], timed, level, batch=WIDTH_BATCH, feed="x",
                                       pairs=pairs, runs=runs), 4) for level in made}
        session, (arrays, _values) = cpu_session(extended, "owned", 1)
        flagged = seen = 0
        for _ in range(clean_batches):
            x = rng.standard_normal((WIDTH_BATCH, 4, px, px)).astype(np.float32)
            for tiles in (x, np.abs(x)):
                ok = session.run([abft.OUTPUT], {"x": tiles})[0]
                flagged, seen = flagged + int((~ok).sum()), seen + ok.size
        x = rng.standard_normal((WIDTH_FLIP_BATCH, 4, px, px)).astype(np.float32)
        clean = {"probabilities": session.run(["probabilities"], {"x": x})[0],
                 "cloud_fraction": np.zeros((WIDTH_FLIP_BATCH, 1), np.float32)}  # none here: moves nothing
        names = tuple(t.name for t in model.graph.initializer if t.name.endswith("_w"))
        ends = np.cumsum([arrays[name].nbytes for name in names])
        mattered = caught = harmless = 0
        for _ in range(flips):
            name, byte, bit = draw_byte(rng, names, ends)
            memory = arrays[name].reshape(-1).view(np.uint8)  # the owned buffer the session computes from
            saved = memory[byte]
            try:
                memory[byte] ^= np.uint8(1 << bit)
                y, ok = session.run(["probabilities", abft.OUTPUT], {"x": x})
            finally:
                memory[byte] = saved
            hit = consequential(clean, {"probabilities": y, "cloud_fraction": clean["cloud_fraction"]})
            mattered += bool(hit.any())
            caught += bool(hit.any() and not ok[hit].any())
            harmless += bool(not hit.any() and not ok.all())
        by_width[str(width)] = {**costs, "macs_per_tile": macs, "false_alarms": [flagged, seen], "flips": flips,
                                "flips_consequential": mattered, "flips_detected": caught,
                                "flagged_harmless": harmless}
    return {"abft_overhead_by_width": by_width}


# -- the scrubber and the worker on a simulated clock -------------------------------------------


class SimClock:
    """The worker's clock, simulated: stands in for the ``time`` module the worker reads
    (``monotonic()`` returns :attr:`now_s`, set by the bench; everything else is the real module's).
    Installed over ``flight.compute.worker.time`` by :func:`simulated_worker` and put back after:
    the worker's code is run unchanged, its clock passed in from outside, so a simulated day is
    exact and repeatable and nothing sleeps."""

    def __init__(self, now_s: float):
        self.now_s = float(now_s)

    def monotonic(self) -> float:
        return self.now_s

    def __getattr__(self, name: str):
        return getattr(time, name)


@contextlib.contextmanager
def simulated_worker(radiation: cp.Radiation, batch: int = DAY_BATCH):
    """A :class:`~flight.compute.worker.Worker` in this process (tests/model_helpers.py: a real
    socket, a model store in a temporary directory, the shipped model installed), on a
    :class:`SimClock`, admitted as the agent admits it: ``abft_checks`` and ``weights_scrub`` on,
    the flight defaults for the double run. Yields (bench, clock)."""
    from tests.model_helpers import WorkerBench  # the worker harness the tests use

    clock = SimClock(1000.0)
    real_time = worker_module.time
    worker_module.time = clock
    try:
        with tempfile.TemporaryDirectory(prefix="sunlit-radiation-") as tmp:
            bench = WorkerBench(Path(tmp) / "compute", allow_unsigned=True)
            try:
                bench.worker.install_shipped_models()
                admit(bench.worker, radiation, batch)
                bench.worker._session(MODEL_NAME)
                yield bench, clock
            finally:
                bench.close()
    finally:
        worker_module.time = real_time


def admit(worker, radiation: cp.Radiation, batch: int = DAY_BATCH) -> None:
    """What the agent sends the worker every tick, with ``radiation`` as it predicts it."""
    defaults = DICTIONARY.parameter_defaults
    worker._handle(cp.Admit(Admission.ALL, 1, batch, 1.0, None, "bench", radiation=radiation,
                            double_run_fraction=defaults["double_run_fraction"],
                            double_run_all_in_saa=defaults["double_run_all_in_saa"],
                            scrub_weights=True, abft_checks=True))


def radiation_of(flux: FluxClass) -> cp.Radiation:
    """A prediction of class ``flux`` (what ``radiation_estimate`` would send), on the SSO's orbit."""
    lat = {FluxClass.SAA: -30.0, FluxClass.HIGH_LATITUDE: 70.0, FluxClass.QUIET: 10.0}[flux]
    return cp.Radiation(flux, flux is FluxClass.SAA, lat, SSO_PERIOD_S, 0.0 if flux is FluxClass.SAA else None)


def scrub_latency(flux: FluxClass, flips: int, rng: np.random.Generator, tick_s: float = SCRUB_TICK_S) -> dict[str, float]:
    """Seconds from a flip in an owned weight to its repair by the worker's periodic scrub.

    One flip at a time, at a time uniform over one period after the last repair (so its place
    relative to the scrubber's cursor is random), in a byte drawn uniformly over the owned buffers
    of the shipped model's session (its checksum weights included), one of its 8 bits;
    ``Worker.scrub_tick(now_s)`` is called every ``tick_s`` of simulated time, as the worker's loop
    calls it when idle (``IDLE_WAIT_S``, its longest wait); the latency ends at the tick whose
    step made the repair (``scrub_repairs`` went up). No inference runs: this is the scrub alone,
    not a check that failed and scrubbed everything at once."""
    with simulated_worker(radiation_of(flux)) as (bench, clock):
        worker = bench.worker
        scrubber = worker._session(MODEL_NAME).scrubber
        names, ends = owned_sites(scrubber)
        period = scrub_period_s(flux, SSO_PERIOD_S)
        latencies = []
        tick = clock.now_s
        for _ in range(flips):
            t_flip = clock.now_s + float(rng.uniform(0.0, period))
            while tick <= t_flip:
                clock.now_s = tick
                worker.scrub_tick(tick)
                tick += tick_s
            name, byte, bit = draw_byte(rng, names, ends)
            scrubber.owned_bytes(name)[byte] ^= np.uint8(1 << bit)
            repaired = worker.scrub_repairs
            while worker.scrub_repairs == repaired:
                clock.now_s = tick
                worker.scrub_tick(tick)
                tick += tick_s
            latencies.append(clock.now_s - t_flip)
            assert scrubber.verify(), "a repair leaves every owned chunk matching its CRC"
        lat = np.array(latencies)
        return {"period_s": period, "flips": flips, "p50_s": round(float(np.percentile(lat, 50)), 2),
                "p99_s": round(float(np.percentile(lat, 99)), 2), "max_s": round(float(lat.max()), 2)}


def scrub_cpu(flux: FluxClass, flight_s: float = SCRUB_CPU_FLIGHT_S, tick_s: float = SCRUB_TICK_S) -> dict[str, float]:
    """CPU time this thread spends in ``Worker.scrub_tick`` per second of simulated flight, as a
    percentage of one core: ticks every ``tick_s`` over ``flight_s`` (several full passes at every
    period), the shipped model's session, nothing to repair. ``time.thread_time``: this thread's
    CPU alone, not the wall clock of a shared machine."""
    with simulated_worker(radiation_of(flux)) as (bench, clock):
        worker = bench.worker
        ticks = np.arange(1, int(flight_s / tick_s) + 1) * tick_s + clock.now_s
        t0 = time.thread_time()
        for tick in ticks:
            clock.now_s = float(tick)
            worker.scrub_tick(float(tick))
        cpu_s = time.thread_time() - t0
        scrubber = worker._session(MODEL_NAME).scrubber
        return {"cpu_pct": round(100.0 * cpu_s / flight_s, 5), "passes": scrubber.passes,
                "cpu_s_per_pass": round(cpu_s / max(1, scrubber.passes), 6)}


def scrub_cpu_large(mb: int = SCRUB_LARGE_MB, tick_s: float = SCRUB_TICK_S) -> dict[str, object]:
    """The scrubber alone (``WeightScrubber.step`` each ``tick_s``, as the worker's tick calls it, nothing
    to repair) over ``mb`` MB of float32 weights, a model of a realistic size where the shipped one has
    64 KB (found in audit: at that size the figure is the per-call cost): this thread's CPU over two
    full passes at each class's period, as % of one core, and per MB of weights per pass (each pass
    reads the owned bytes and one golden copy). Whether :data:`~flight.compute.scrub.STEP_BYTES` lets a
    step keep up at that period is ``keeps_up``."""
    weights = np.random.default_rng(0).standard_normal(mb * 2**20 // 4, dtype=np.float32)
    out: dict[str, object] = {"mb": mb}
    for flux in SCRUB_CLASSES:
        period = scrub_period_s(flux, SSO_PERIOD_S)
        scrubber = WeightScrubber({"w": weights}, 0.0, period_s=period)
        ticks = np.arange(1, int(2 * period / tick_s) + 1) * tick_s
        t0 = time.thread_time()
        for tick in ticks:
            scrubber.step(float(tick))
        cpu_s = time.thread_time() - t0
        out[flux.value] = {"cpu_pct": round(100.0 * cpu_s / float(ticks[-1]), 4), "passes": scrubber.passes,
                           "cpu_s_per_mb_pass": round(cpu_s / max(1, scrubber.passes) / mb, 6),
                           "keeps_up": scrubber.passes >= 2}
        del scrubber
    return out


def scrub_figures(seed: int, flips: int = SCRUB_FLIPS) -> dict[str, object]:
    rng = np.random.default_rng(seed + 3000)
    latency = {flux.value: scrub_latency(flux, flips, rng) for flux in SCRUB_CLASSES}
    cpu = {flux.value: scrub_cpu(flux) for flux in SCRUB_CLASSES}
    busy = {flux.value: scrub_cpu(flux, tick_s=worker_module.SLICE_S)["cpu_pct"] for flux in SCRUB_CLASSES}
    with simulated_worker(radiation_of(FluxClass.QUIET)) as (bench, _clock):
        scrubber = bench.worker._session(MODEL_NAME).scrubber
        weight_bytes, tensors = scrubber.bytes_total, len(scrubber.names)
    return {
        "scrub_detect_latency_s": latency,
        "scrub_detect_latency_s_p99": {k: v["p99_s"] for k, v in latency.items()},
        "scrub_detect_latency_s_p50": {k: v["p50_s"] for k, v in latency.items()},
        "scrub_detect_latency_s_max": {k: v["max_s"] for k, v in latency.items()},
        "scrub_cpu_pct": {k: v["cpu_pct"] for k, v in cpu.items()},
        "scrub_cpu_pct_busy_loop": busy,
        "scrub_cpu_detail": cpu,
        "scrub_cpu_large_model": scrub_cpu_large(),
        "scrub_model_weight_bytes": weight_bytes,
        "scrub_model_tensors": tensors,
        "scrub_tick_s": SCRUB_TICK_S,
    }


# -- a simulated day of upsets through the worker -----------------------------------------------


@dataclass(frozen=True)
class DayTrack:
    """A day of the profile's orbit at ``DAY_STEP_S``: the truth (the harness's upset model along
    the track, per bit) and what the agent predicts (``radiation_estimate`` from the same TLE)."""

    time_unix_s: np.ndarray
    upsets_per_bit_s: np.ndarray
    predicted: tuple[cp.Radiation, ...]
    profile_check_rel: float  # the truth model against the profile's own column, where both exist


def day_track(profile_path: Path = DAY_PROFILE, day_s: float = DAY_S, step_s: float = DAY_STEP_S) -> DayTrack:
    """The profile's TLE flown for ``day_s``: upset rate per bit from the harness's own model
    (hil/profiles/radiation.py, the parameters in the profile's metadata: AP8 flux above 10 MeV
    times the cross-section, divided here by the bits it was given for), and the class the agent
    predicts at each step. The profile holds 3 h; the same model run over its own samples is
    compared with its ``upset_rate_per_s`` column (``profile_check_rel``, the largest relative
    difference where the rate is not negligible)."""
    profile = read_profile(profile_path)
    orbit = Orbit.from_tle(*profile.tle())
    meta = profile.metadata["radiation"]
    params = RadiationParams.from_metadata(meta)

    def rate_per_bit(t: np.ndarray) -> np.ndarray:
        r_teme_km, _ = orbit.propagate(t)
        lat, lon, alt = geodetic_from_teme(r_teme_km, t)
        return radiation_along_track(t, lat, lon, alt, params).upset_rate_per_s / params.bits

    t = profile.start_s + step_s * np.arange(int(day_s / step_s))
    own = rate_per_bit(profile.time_s) * params.bits
    column = profile.columns["upset_rate_per_s"]
    big = column > 0.01 * column.max()
    check = float(np.max(np.abs(own[big] - column[big]) / column[big]))
    return DayTrack(t, rate_per_bit(t), tuple(radiation_estimate(orbit, float(x), ESTIMATE) for x in t), check)


@dataclass
class DayTally:
    """What a simulated day did. Upsets: ``injected`` (``owned`` in the buffers the session reads,
    ``golden`` in the scrubber's three golden copies); of the owned ones ``repaired_before_use``
    (a periodic scrub step put it right before any batch ran on it), ``detected`` (a batch ran on
    it and a check failed), ``corrected_after_rerun`` (of those, every tile passed after the
    scrub and the rerun), ``used_undetected`` (batches ran on it and no check failed: harmless,
    or a corrupt result passed). Tiles: by the status in their product's receipt, and against
    the clean reference."""

    injected: int = 0
    injected_owned: int = 0
    injected_golden: int = 0
    injected_owned_model: int = 0  # of the owned: in the model's own weights (the rest: the checks' sums)
    repaired_before_use: int = 0
    detected: int = 0
    corrected_after_rerun: int = 0
    used_undetected: int = 0
    tiles: int = 0
    tiles_passed: int = 0
    tiles_failed: int = 0
    tiles_unchecked: int = 0
    tiles_corrupt: int = 0
    corrupt_reported_good: int = 0
    jobs: int = 0
    jobs_failed: int = 0  # ended with no product (an error the worker could not get past)
    outstanding_at_end: int = 0  # owned upsets not yet put right when the day ends
    weight_bytes: int = 0  # owned bytes (each golden copy as many)
    jobs_corrupt_reported_good: int = 0  # jobs with a tile reported passed while corrupt
    trials: int = 0  # of those, the jobs that were the first to run on an upset present (the trials, flown blind)
    upsets_behind_corrupt_good: int = 0  # the upsets those first ran on (harmless ones among them)
    scrub_latencies_s: list[float] = field(default_factory=list)  # owned upsets no check caught: in to repaired
    examples: list[str] = field(default_factory=list)


def corrupt(classes: np.ndarray, conf: np.ndarray, ref_classes: np.ndarray, ref_conf: np.ndarray) -> np.ndarray:
    """Per tile: the class differs from the clean reference, or its confidence (its probability)
    by more than ``CONSEQUENCE``, or it is not finite."""
    return (classes != ref_classes) | ~np.isfinite(conf) | (np.abs(conf - ref_conf) > CONSEQUENCE)


def upset_day(seed: int, scale: float = DAY_UPSET_SCALE, tiles_per_step: int = DAY_TILES_PER_STEP,
              track: DayTrack | None = None, model_only: bool = False) -> tuple[DayTally, DayTrack]:
    """A day of the orbit through the worker, its clock simulated; see :func:`day_track` for the truth.

    Each ``DAY_STEP_S`` step: the agent's prediction is admitted (the scrub period follows it);
    ``Poisson(rate x scale x bits x step)`` upsets land at uniform times in the step, each on a
    byte drawn uniformly over the owned buffers and the three golden copies (every byte the
    scrubber keeps is exposed), one of its 8 bits; ``scrub_tick`` runs every ``SCRUB_TICK_S``; and
    at a time uniform in the step one inference job of ``tiles_per_step`` held-out tiles (the 800
    in turn) runs through the worker (``work_slice``: its own scrub tick, checked batches, a
    failed check scrubbed and rerun, a product with its receipt). Every tile of every product is
    compared with the same tile from the worker before any upset.

    ``model_only``: as many upsets, every one in the owned buffers of the model's own weights (not the
    checks' sums, nor the golden copies): a stress apart, for the number of trials a day gives the
    checks (a day as drawn puts about 6 upsets in the model's own 3 KB).

    Modelled, not measured: the upset rate (the harness's AP8 model, x ``scale``), that upsets hit
    only the weights (activations and held results: the HIL's memory upsets, hil/loop.py; the
    runtime's own memory is reachable by neither), and the duty: one batch-set a step instead of continuous inference."""
    rng = np.random.default_rng(seed + 4000)
    track = day_track() if track is None else track
    held = load_held_out().tiles.astype(np.float32)
    sets = len(held) // tiles_per_step
    tally = DayTally()
    with simulated_worker(track.predicted[0]) as (bench, clock):
        worker = bench.worker
        for s in range(sets):
            bench.data_set(f"s{s}", held[s * tiles_per_step:(s + 1) * tiles_per_step])
        ref = [run_job(bench, 1 + s, f"s{s}") for s in range(sets)]  # before any upset: the clean reference
        assert all(r is not None and (r[2] == PASSED).all() for r in ref), "the clean reference passed its checks"
        job_id = 1 + sets
        scrubber = worker._session(MODEL_NAME).scrubber
        names, ends = owned_sites(scrubber)
        owned_total = tally.weight_bytes = int(ends[-1])
        own = tuple(n for n in names if not n.startswith(abft.PREFIX))
        own_ends = np.cumsum([scrubber.owned_bytes(n).size for n in own])
        clean = {n: scrubber.owned_bytes(n).copy() for n in names}
        upsets_owned: list[dict] = []  # not yet put right: tensor, byte, used (a batch ran on it), caught, marked
        t0 = clock.now_s
        for k, radiation in enumerate(track.predicted):
            start = t0 + k * DAY_STEP_S
            admit(worker, radiation)
            n = int(rng.poisson(track.upsets_per_bit_s[k] * scale * 8 * 4 * owned_total * DAY_STEP_S))
            events = [(float(u), "upset") for u in start + rng.uniform(0.0, DAY_STEP_S, n)]
            events.append((start + float(rng.uniform(0.0, DAY_STEP_S)), "job"))
            events += [(start + i * SCRUB_TICK_S, "tick") for i in range(int(DAY_STEP_S / SCRUB_TICK_S))]
            for when, what in sorted(events):
                clock.now_s = when
                scrubbed_all = False  # a check failed in this event's job: its scrub put everything right
                if what == "tick":
                    worker.scrub_tick(when)
                elif what == "upset":
                    tally.injected += 1
                    copy = int(rng.integers(4))  # 0: owned, 1..3: a golden copy (the four equal in size)
                    name, byte, bit = draw_byte(rng, names, ends)
                    if model_only:  # the same draws made, then put in the model's own weights
                        copy, (name, byte, bit) = 0, draw_byte(rng, own, own_ends)
                    view = scrubber.owned_bytes(name) if copy == 0 else scrubber.golden_bytes(copy - 1, name)
                    view[byte] ^= np.uint8(1 << bit)
                    if copy == 0:
                        tally.injected_owned += 1
                        tally.injected_owned_model += not name.startswith(abft.PREFIX)
                        upsets_owned.append({"tensor": name, "byte": byte, "bit": bit, "used": False,
                                             "caught": False, "marked": False, "at": when})
                    else:
                        tally.injected_golden += 1
                else:
                    s = (job_id - 1) % sets
                    failed_before, marked_before = worker.checks_failed, worker.results_marked
                    present = [u for u in upsets_owned if scrubber.owned_bytes(u["tensor"])[u["byte"]]
                               != clean[u["tensor"]][u["byte"]]]
                    done = run_job(bench, job_id, f"s{s}")
                    job_id += 1
                    tally.jobs += 1
                    scrubbed_all = worker.checks_failed > failed_before
                    for u in present:  # the job ran on them, whatever came of it
                        u["used"] = True
                        if worker.checks_failed > failed_before:
                            u["caught"] = True
                            u["marked"] = worker.results_marked > marked_before
                    if done is None:
                        tally.jobs_failed += 1
                    else:
                        classes, conf, status = done
                        tally.tiles += len(status)
                        tally.tiles_passed += int((status == PASSED).sum())
                        tally.tiles_failed += int((status == FAILED).sum())
                        tally.tiles_unchecked += int((status == UNCHECKED).sum())
                        bad = corrupt(classes, conf, ref[s][0], ref[s][1])
                        tally.tiles_corrupt += int(bad.sum())
                        sneaked = bad & (status == PASSED)
                        tally.corrupt_reported_good += int(sneaked.sum())
                        if sneaked.any():
                            tally.jobs_corrupt_reported_good += 1
                            fresh = [u for u in present if not u.get("ran")]
                            # A trial: the first job to run on its upsets (with the checks, it scrubs them; flown
                            # blind, the jobs after it run on the same upsets again: repeats, not trials). Not
                            # where an older upset present had corrupted a job already: it may be what corrupted
                            # this one, and its first job was the trial (a review: counted twice).
                            stale = [u for u in present if u.get("ran")]
                            tally.trials += bool(fresh) and not any(u.get("corrupted") for u in stale)
                            tally.upsets_behind_corrupt_good += len(fresh)
                            for u in present:
                                u["corrupted"] = True
                        if sneaked.any() and len(tally.examples) < 5:
                            where = ", ".join(f"{u['tensor']}[byte {u['byte']}] bit {u['bit']}" for u in present)
                            tally.examples.append(f"t={when - t0:.0f} s: {int(sneaked.sum())} tiles; weights hit: {where}")
                    for u in present:
                        u["ran"] = True
                # Settle the upsets put right by now (a scrub step, or the full scrub after a failed check).
                still = []
                for u in upsets_owned:
                    if scrubber.owned_bytes(u["tensor"])[u["byte"]] != clean[u["tensor"]][u["byte"]]:
                        still.append(u)
                    elif not u["used"]:
                        tally.repaired_before_use += 1
                        if not scrubbed_all:  # the periodic scrub's repair, not a failed check's scrub of all
                            tally.scrub_latencies_s.append(when - u["at"])
                    elif u["caught"]:
                        tally.detected += 1
                        tally.corrected_after_rerun += not u["marked"]
                    else:
                        tally.used_undetected += 1
                        if not scrubbed_all:
                            tally.scrub_latencies_s.append(when - u["at"])
                upsets_owned = still
        tally.outstanding_at_end = len(upsets_owned)
    return tally, track


def run_job(bench, job_id: int, input_set: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """One inference job of the shipped model through the worker: (classes, confidence, per-tile
    check status) of its product, as the ground would read them; None where the job failed (no
    product: counted, ``jobs_failed``). The StartJob is handed to the worker as the tests' bench
    does, its reply read without waiting on the socket's poll."""
    worker = bench.worker
    worker._handle(cp.StartJob(job_id, cp.JobSpec(job_id, JobKind.INFERENCE, input_set, model=MODEL_NAME)))
    job = worker.jobs[job_id]
    for _ in range(100):
        if job.state not in ACTIVE:
            break
        worker.work_slice()
    bench.drain()
    bench.messages.clear()  # events and replies: counted by the worker's own counters, not needed here
    if job.state.value != "DONE":
        return None
    with np.load(bench.root / "products" / f"job{job_id:05d}-{input_set}.npz", allow_pickle=False) as npz:
        return npz["classes"], npz["confidence"], npz["check"]


@contextlib.contextmanager
def checks_blind():
    """The worker with every checksum and range flag read as passed (double runs, scrub and all else as
    they are): the same day flown blind says how many corrupt tiles the checks kept from being reported
    good, so that a 0 with them means something (found in review: on some seeds a checker that never
    flags also scored 0)."""
    real = worker_module.check_flags
    worker_module.check_flags = lambda names, values, samples: (np.ones(samples, bool), "")
    try:
        yield
    finally:
        worker_module.check_flags = real


DAY_UPSET_KEYS = ("injected", "injected_owned", "injected_owned_model", "injected_golden", "repaired_before_use",
                  "detected", "corrected_after_rerun", "used_undetected", "outstanding_at_end")
DAY_TILE_KEYS = ("tiles", "tiles_passed", "tiles_failed", "tiles_unchecked", "tiles_corrupt", "corrupt_reported_good",
                 "jobs", "jobs_failed")


def summed(tallies: Sequence[DayTally], keys: Sequence[str]) -> dict[str, int]:
    return {k: sum(getattr(t, k) for t in tallies) for k in keys}


def flown(seeds: Sequence[int], scale: float, track: DayTrack,
          model_only: bool = False) -> list[tuple[int, DayTally, DayTally]]:
    """Each seed's day with the checks as they are and again blind (the same upsets: their draws do not
    depend on what the worker does)."""
    out = []
    for s in seeds:
        tally, _ = upset_day(s, scale, track=track, model_only=model_only)
        with checks_blind():
            blind, _ = upset_day(s, scale, track=track, model_only=model_only)
        out.append((s, tally, blind))
    return out


def miss_rate_upper(trials: int, confidence: float = 0.95) -> float | None:
    """The largest rate of corrupt results passed per trial that 0 in ``trials`` leaves plausible at
    ``confidence`` (one-sided, exact: 1 - (1 - confidence)^(1/n)); None with no trial."""
    return round(1.0 - (1.0 - confidence) ** (1.0 / trials), 4) if trials else None


def trials_of(days: Sequence[tuple[int, DayTally, DayTally]]) -> dict[str, object]:
    """What a 0 of ``corrupt_results_reported_good`` over ``days`` rests on. Flown blind, an upset no
    scrub has reached corrupts every job until one does; with the checks, the first job to run on it
    scrubs it. So the trials are the jobs that, flown blind, reported a corrupt tile good and were the
    first to run on an upset present, with no older upset present that had corrupted a job before (found in
    review: counting every such job counted repeats; and counting one whose older upset had corrupted an
    earlier job, whose first job was the trial already, counted it twice);
    with the upsets they first ran on (harmless ones among them), and the miss rate per trial that 0
    in them still allows. ``jobs_corrupt_reported_good_blind``: every such job, repeats included."""
    trials = sum(b.trials for _, _, b in days)
    return {"trials_blind": trials,
            "upsets_first_run_in_them_blind": sum(b.upsets_behind_corrupt_good for _, _, b in days),
            "jobs_corrupt_reported_good_blind": sum(b.jobs_corrupt_reported_good for _, _, b in days),
            "jobs_corrupt_reported_good": sum(t.jobs_corrupt_reported_good for _, t, _ in days),
            "miss_rate_per_trial_upper_95": miss_rate_upper(trials)
            if not any(t.corrupt_reported_good for _, t, _ in days) else None}


def day_figures(seed: int, scale: float = DAY_UPSET_SCALE) -> dict[str, object]:
    t_start = time.perf_counter()
    track = day_track()
    saa_rate = float(track.upsets_per_bit_s.max())
    saa_day = DayTrack(track.time_unix_s, np.full_like(track.upsets_per_bit_s, saa_rate), track.predicted,
                       track.profile_check_rel)
    days = flown([seed + 100 * i for i in range(DAY_SEEDS)], scale, saa_day)
    tallies = [t for _, t, _ in days]
    stress = flown([seed + 100 * i + 50 for i in range(DAY_MODEL_SEEDS)], scale, saa_day, model_only=True)
    flux = [r.flux_class.value for r in track.predicted]
    latency = np.array([x for t in tallies for x in t.scrub_latencies_s])
    return {
        "corrupt_results_reported_good": sum(t.corrupt_reported_good for t in tallies),
        "corrupt_results_reported_good_blind": sum(b.corrupt_reported_good for _, _, b in days),
        "corrupt_results_trials": trials_of(days),
        "corrupt_results_reported_good_model_weights": sum(t.corrupt_reported_good for _, t, _ in stress),
        "corrupt_results_reported_good_model_weights_blind": sum(b.corrupt_reported_good for _, _, b in stress),
        "corrupt_results_trials_model_weights": trials_of(stress),
        "day_model_weights_upsets": summed([t for _, t, _ in stress], DAY_UPSET_KEYS),
        "scrub_detect_latency_s_day": {"upsets": int(latency.size),
                                       "censored": sum(t.outstanding_at_end for t in tallies),
                                       "p50_s": round(float(np.percentile(latency, 50)), 1) if latency.size else None,
                                       "p99_s": round(float(np.percentile(latency, 99)), 1) if latency.size else None,
                                       "max_s": round(float(latency.max()), 1) if latency.size else None},
        "day_by_seed": [{"seed": s, "corrupt_reported_good": t.corrupt_reported_good,
                         "corrupt_reported_good_blind": b.corrupt_reported_good,
                         "injected_owned_model": t.injected_owned_model, "tiles_corrupt": t.tiles_corrupt,
                         "jobs_failed": t.jobs_failed} for s, t, b in days],
        "day_upsets": summed(tallies, DAY_UPSET_KEYS),
        "day_tiles": summed(tallies, DAY_TILE_KEYS),
        "day_corrupt_examples": [e for t in tallies for e in t.examples][:5],
        "day_upset_scale": scale,
        "day_upset_rate": f"{scale:g} x the SAA's rate (the track's peak, {saa_rate:.3g} per bit per s) at every step; "
                          f"the track's mean is {float(track.upsets_per_bit_s.mean()):.3g}",
        "day_upsets_expected": round(saa_rate * len(track.predicted) * DAY_STEP_S * scale * 8 * 4
                                     * tallies[0].weight_bytes * DAY_SEEDS, 2),
        "day_predicted_flux_steps": {c: flux.count(c) for c in sorted(set(flux))},
        "day_truth_vs_profile_rel": round(track.profile_check_rel, 4),
        "day_compression": f"{DAY_SEEDS} days of {DAY_TILES_PER_STEP} tiles once per {DAY_STEP_S:g} s step "
                           f"({len(track.predicted)} steps), at a time uniform in the step; scrub_tick every "
                           f"{SCRUB_TICK_S:g} s",
        "day_s": round(time.perf_counter() - t_start, 1),
    }


def non_negative_int(text: str) -> int:
    """argparse's type for a seed or a count: a whole number of 0 or more. numpy's generators refuse a
    negative seed (found in audit: ``--seed -1`` was a ValueError traceback from inside numpy; a negative
    count or size sliced or ran nothing, silently)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative: give 0 or more")
    return value


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=non_negative_int, default=SEED)
    args = parser.parse_args(argv)
    t_start = time.perf_counter()
    bare = (MODELS_DIR / MODEL_FILE).read_bytes()
    model = onnx.load_from_string(bare)
    protected = abft.protect(model)  # as the worker makes it for owned weights (extended), the default
    protected_all = abft.protect(model, nchwc=checksum_layout_nchwc("all"))  # for its sessions at "all"
    protected_bytes, protected_all_bytes = protected.SerializeToString(), protected_all.SerializeToString()
    held = load_held_out().tiles.astype(np.float32)
    reference = shipped_reference_inputs()  # what the worker learns the shipped model's ranges from
    learned = ranges.learn(bare, reference)
    ranged = ranges.protect(protected, learned, margin=ranges.DEFAULT_MARGIN)
    ranged_bytes = ranged.SerializeToString()
    ranged_all_bytes = ranges.protect(protected_all, learned, margin=ranges.DEFAULT_MARGIN).SerializeToString()

    tallies = flip_campaigns(protected, held, args.seed, FLIPS, UNCHECKED_FLIPS, ranged, by_size=BY_SIZE_FLIPS)
    ranged_flips = tallies.pop("range_activations")
    checked = tallies["weights"].merge(tallies["activations"])
    by_size = tallies["weights_by_size"].merge(tallies["activations_by_size"])
    tf32 = flip_campaigns(abft.protect(model, precision="tf32"), held, args.seed + 1, TF32_FLIPS, 0)
    tf32_all = tf32["weights"].merge(tf32["activations"])

    # The same draws on the model as version 6 made it (no compare of the outputs): what the compare adds.
    without_compare = Injector(abft.protect(model, compare_outputs=False), CHECKED_WEIGHTS + UNCHECKED_WEIGHTS,
                               PAST_CHECKS).campaign(np.random.default_rng(args.seed + 9000), held, PAST_FLIPS,
                                                     "activation", PAST_CHECKS)

    tiles = clean_tiles(args.seed)
    one = open_session(protected_all_bytes, ["CPUExecutionProvider"], threads=1).session  # level "all"
    alarms = count_false_alarms(one, tiles)
    part = tiles[:: 4]
    two = open_session(protected_all_bytes, ["CPUExecutionProvider"], threads=2).session
    plain = ort.InferenceSession(protected_bytes, session_options_for(1, optimization="disable"),
                                 providers=["CPUExecutionProvider"])
    owned = cpu_session(protected_bytes, "owned", 2)
    alarms_owned = count_false_alarms(owned[0], tiles, 16)  # the worker's default session, every tile
    alarms_other = count_false_alarms(two, part) + count_false_alarms(plain, part)
    flip_clean, flip_clean_tiles = campaign_clean(tallies.values(), (abft.OUTPUT,))
    range_figures = range_false_alarm_figures(ranged_bytes, tiles, part, [ranged_flips, *tallies.values()])

    costs = overhead_figures(bare, protected, protected_all, held)
    record = abft.describe(protected)
    scrub = scrub_figures(args.seed)
    day = day_figures(args.seed)
    return {
        "abft_detect_rate": by_size.rate(),
        "abft_flips_injected": by_size.injected,
        "abft_flips_consequential": by_size.consequential[0],
        "abft_flips_detected": by_size.detected[0],
        "abft_detect_rate_weights": tallies["weights_by_size"].rate(),
        "abft_flips_consequential_weights": tallies["weights_by_size"].consequential[0],
        "abft_detect_rate_activations": tallies["activations_by_size"].rate(),
        "abft_flips_consequential_activations": tallies["activations_by_size"].consequential[0],
        "abft_flagged_harmless": by_size.flagged_harmless,
        "abft_detect_rate_over_1e-2": by_size.rate(1),
        "abft_flips_consequential_over_1e-2": by_size.consequential[1],
        "abft_detect_rate_class_only": by_size.rate(2),
        "abft_flips_consequential_class_only": by_size.consequential[2],
        "abft_missed_examples": by_size.missed,
        "abft_detect_rate_checked_sites": checked.rate(),
        "abft_flips_consequential_checked_sites": checked.consequential[0],
        "abft_detect_rate_checked_weights": tallies["weights"].rate(),
        "abft_detect_rate_checked_activations": tallies["activations"].rate(),
        "abft_missed_examples_checked_sites": checked.missed,
        "consequence": f"a probability or the cloud fraction moved by > {CONSEQUENCE:g}, the class changed, "
                       "or an output became non-finite, for some tile of the batch; detected: every such tile flagged",
        "abft_detect_rate_tf32_tolerance": tf32_all.rate(),
        **wide_layer_figures(args.seed),
        **width_figures(args.seed),
        "abft_flips_consequential_tf32": tf32_all.consequential[0],
        "unchecked_detect_rate_weights": tallies["unchecked_weights"].rate(),
        "unchecked_flips_consequential_weights": tallies["unchecked_weights"].consequential[0],
        "unchecked_detect_rate_activations": tallies["unchecked_activations"].rate(),
        "unchecked_flips_consequential_activations": tallies["unchecked_activations"].consequential[0],
        "detect_rate_activations_all_sites": tallies["all_activations"].rate(),
        "flips_consequential_activations_all_sites": tallies["all_activations"].consequential[0],
        "range_detect_rate_activations_all_sites": tallies["range_all_activations"].rate(),
        "past_checks_detect_rate": tallies["past_checks"].rate(),
        "past_checks_flips_consequential": tallies["past_checks"].consequential[0],
        "past_checks_detect_rate_without_compare": without_compare.rate(),
        **costs,
        "false_alarms": alarms + alarms_owned + alarms_other,
        "false_alarm_tiles": 2 * len(tiles) + 2 * len(part),
        "false_alarm_tiles_distinct": len(tiles),
        "false_alarms_1_thread": alarms,
        "false_alarm_tiles_1_thread": len(tiles),
        "false_alarms_worker_default": [alarms_owned, len(tiles)],
        "false_alarms_flip_campaign_clean": [flip_clean, flip_clean_tiles],
        "range_detect_rate_activations": ranged_flips.rate(),
        "range_flips_consequential_activations": ranged_flips.consequential[0],
        "range_detect_rate_activations_class_only": ranged_flips.rate(2),
        "range_missed_examples": ranged_flips.missed,
        **range_figures,
        "range_overhead": round(overhead(bare, ranged_all_bytes, held), 4),
        "range_margin": ranges.DEFAULT_MARGIN,
        "range_reference_tiles": len(reference),
        "range_tensors": list(ranges.describe(ranged)["ranges"]),
        "abft_rtol": {c["output"]: c["rtol"] for c in record["checks"]},
        "abft_pass_version": abft.PASS_VERSION,
        **scrub,
        **day,
        "seed": args.seed,
        "onnxruntime": ort.__version__,
        "bench_s": round(time.perf_counter() - t_start, 1),
    }


if __name__ == "__main__":
    result = main(sys.argv[1:])
    print(json.dumps(result))
