"""Execution providers: TensorRT, CUDA, CPU in that order, and every fallback explained.

This machine's onnxruntime has no GPU providers, which is what lets the tests make real
onnxruntime refuse them: we tell open_session they are available, and onnxruntime
either raises (an unknown provider) or warns and quietly uses the CPU (a known provider
missing from the build). Both must end on the CPU with the reason recorded.
"""

import json
import os
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from flight.compute.arithmetic import TF32_OVERRIDE, tf32_allowed, worker_environment
from flight.compute.providers import (
    CPU,
    CUDA,
    PREFERENCE,
    TENSORRT,
    OpenedSession,
    SessionError,
    abft_precision,
    checksum_layout_nchwc,
    cpu_blocks_conv_outputs,
    cpu_nchwc_block,
    nchwc_layout,
    open_session,
    providers_to_try,
    session_options_for,
)
from flight.compute.usecase.shipped import MODEL_FILE, MODELS_DIR
from flight.config import ConfigError, parse_config
from tests.model_helpers import supervisor

MODEL = MODELS_DIR / MODEL_FILE
GPU_BUILD = CUDA in ort.get_available_providers()


def run_once(session) -> np.ndarray:
    tiles = np.full((2, 4, 16, 16), 0.1, dtype=np.float32)
    return session.run(["probabilities"], {"tiles": tiles})[0]


def test_preference_order_and_cpu_last():
    assert PREFERENCE == (TENSORRT, CUDA, CPU)
    assert providers_to_try() == [TENSORRT, CUDA, CPU]
    assert providers_to_try([CUDA, CUDA]) == [CUDA, CPU]  # repeats dropped, CPU always last
    with pytest.raises(TypeError, match="provider_options"):
        providers_to_try([(CUDA, {"device_id": 0})])


@pytest.mark.req("RAD-106")
def test_the_checksum_precision_is_tf32_wherever_a_gpu_provider_may_run_the_model_with_tf32_allowed():
    everything = [TENSORRT, CUDA, CPU]
    allowed = {}  # an environment without NVIDIA's override: the libraries' default, TF32 on Orin
    # A GPU provider asked for and built in: its Conv/MatMul may round operands to TF32.
    assert abft_precision(None, everything, allowed) == "tf32"  # the worker's list: TensorRT, CUDA, CPU
    assert abft_precision([TENSORRT, CPU], [TENSORRT, CPU], allowed) == "tf32"
    assert abft_precision([CUDA], [CUDA, CPU], allowed) == "tf32"
    # Asked for but not in the build, or built in but not asked for: only the CPU runs it.
    assert abft_precision(None, [CPU], allowed) == "fp32"
    assert abft_precision([CPU], everything, allowed) == "fp32"
    assert abft_precision([TENSORRT, CUDA], [CPU], allowed) == "fp32"
    assert abft_precision(["SomeOtherExecutionProvider"], ["SomeOtherExecutionProvider", CPU], allowed) == "fp32"
    # TF32 forbidden in the process (the worker's environment unless [compute] gpu_tf32): FP32 on the GPU too.
    forbidden = {TF32_OVERRIDE: "0"}
    assert abft_precision(None, everything, forbidden) == "fp32"
    assert abft_precision([CUDA], [CUDA, CPU], forbidden) == "fp32"
    assert abft_precision([CUDA], [CUDA, CPU], {TF32_OVERRIDE: "1"}) == "tf32"  # only "0" forbids it
    # Without lists of its own: the worker's default order over this onnxruntime build's providers, in
    # this process's environment.
    gpu = bool({TENSORRT, CUDA} & set(ort.get_available_providers()))
    assert abft_precision() == ("tf32" if gpu and tf32_allowed() else "fp32")


@pytest.mark.req("RAD-106")
def test_the_worker_starts_with_tf32_forbidden_unless_the_configuration_allows_it(tmp_path):
    base = {"PATH": "/usr/bin", TF32_OVERRIDE: "1"}
    assert worker_environment(base, tf32=False) == {"PATH": "/usr/bin", TF32_OVERRIDE: "0"}
    assert worker_environment(base, tf32=True) == base and base[TF32_OVERRIDE] == "1"  # not changed in place
    assert not tf32_allowed(worker_environment({}, tf32=False)) and tf32_allowed(worker_environment({}, tf32=True))
    assert parse_config({}).compute_gpu_tf32 is False
    assert parse_config({"compute": {"gpu_tf32": True}}).compute_gpu_tf32 is True
    with pytest.raises(ConfigError, match="compute.gpu_tf32"):
        parse_config({"compute": {"gpu_tf32": "yes"}})

    # The agent's supervisor starts the real worker process with that environment.
    def worker_environ(root, **more) -> dict[str, str]:
        sup = supervisor(root, {}, **more)
        try:
            sup.start()
            # Popen returns once the child's exec has begun; the kernel fills in the new program's
            # environment a moment later, and /proc reads empty until then.
            deadline = time.monotonic() + 30.0
            while not (raw := Path(f"/proc/{sup.proc.pid}/environ").read_bytes()) and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            sup.close()
        assert sup.proc.poll() is not None  # the worker is gone with its supervisor
        return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)

    assert worker_environ(tmp_path / "fp32")[TF32_OVERRIDE] == "0"
    assert worker_environ(tmp_path / "tf32", gpu_tf32=True).get(TF32_OVERRIDE) == os.environ.get(TF32_OVERRIDE)


@pytest.mark.req("RAD-106")
def test_whether_conv_outputs_run_blocked_at_level_all_is_what_onnxruntime_does(tmp_path):
    """The answer the checksum pass's layout follows, against what a session of the shipped model at
    ``all`` runs: onnxruntime names each node its NCHWc transformer makes ``..._nchwc``."""
    options = session_options_for(1, optimization="all")
    options.enable_profiling = True
    options.profile_file_prefix = str(tmp_path / "all")
    session = ort.InferenceSession(MODEL.read_bytes(), options, providers=[CPU])
    run_once(session)
    with open(session.end_profiling()) as f:
        ran = [e["name"] for e in json.load(f) if e.get("cat") == "Node"]
    assert ran and cpu_blocks_conv_outputs() is any("_nchwc" in name for name in ran)
    assert checksum_layout_nchwc("all") == cpu_nchwc_block() and (cpu_nchwc_block() == 0 or cpu_blocks_conv_outputs())
    assert not any(checksum_layout_nchwc(level) for level in ("disable", "basic", "extended"))


@pytest.mark.req("RAD-106")
def test_the_layout_probe_reads_the_block_from_the_poolings_onnxruntime_left_plain():
    """The probe's reading of an optimised graph (any build): no blocked node, plain sums; blocked Convs
    whose poolings all stayed plain, Convs blocked but no block the pass can read in; else the smallest
    number of channels whose pooling was rewritten."""
    from flight.compute.providers import _nchwc_answer

    def optimised(*nodes: tuple[str, str, str]) -> onnx.ModelProto:
        made = [helper.make_node(op, ["x"], [out], domain=domain) for op, domain, out in nodes]
        return helper.make_model(helper.make_graph(made, "g", [], []))

    plain = [("Conv", "", f"y{c}") for c in (8, 16, 32)] + [("GlobalAveragePool", "", f"m{c}") for c in (8, 16, 32)]
    assert _nchwc_answer(optimised(*plain), (8, 16, 32)) == (False, 0)
    convs = [("Conv", "com.microsoft.nchwc", "t0")]
    assert _nchwc_answer(optimised(*convs, *plain[3:]), (8, 16, 32)) == (True, 0)
    assert _nchwc_answer(optimised(*convs, ("GlobalAveragePool", "", "m8"),
                                   ("GlobalAveragePool", "com.microsoft.nchwc", "t1")), (8, 16, 32)) == (True, 16)
    assert _nchwc_answer(optimised(*convs), (8, 16, 32)) == (True, 8)


@pytest.mark.req("RAD-106")
def test_the_nchwc_block_is_the_channel_count_whose_multiples_a_pooling_keeps_blocked(tmp_path):
    """The block the probe gives, against what onnxruntime does with a GlobalAveragePool after a Conv of
    8, 16, 24 and 32 channels: kept blocked where they are whole blocks, reordered to the plain layout
    first where not (what the checksum pass's reads in that layout rely on: abft.protect's ``nchwc``)."""
    block = cpu_nchwc_block()
    if not block:
        pytest.skip("this onnxruntime keeps no Conv output blocked")
    rng = np.random.default_rng(2)
    for channels in (8, 16, 24, 32):
        graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1]),
                                   helper.make_node("GlobalAveragePool", ["y"], ["m"])],
                                  "pool", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                                  [helper.make_tensor_value_info("m", TensorProto.FLOAT, None)],
                                  [numpy_helper.from_array(rng.normal(size=(channels, 4, 3, 3)).astype(np.float32),
                                                           "w")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        model.ir_version = 8
        options = session_options_for(1, optimization="all")
        options.optimized_model_filepath = str(tmp_path / f"pool{channels}.onnx")
        ort.InferenceSession(model.SerializeToString(), options, providers=[CPU])
        made = onnx.load(options.optimized_model_filepath)
        kept = any(n.op_type == "GlobalAveragePool" and n.domain == "com.microsoft.nchwc" for n in made.graph.node)
        assert kept is (channels % block == 0), (channels, block)


def test_with_no_scratch_space_the_layout_probe_says_plain_sums_and_raises_nothing(monkeypatch):
    """Found in review: a temporary directory that cannot be made failed the job whose session asked."""
    import tempfile

    def refuse(*_args, **_kwargs):
        raise FileNotFoundError("no usable temporary directory")

    nchwc_layout.cache_clear()
    monkeypatch.setattr(tempfile, "TemporaryDirectory", refuse)
    try:
        assert cpu_blocks_conv_outputs() is False and checksum_layout_nchwc("all") == 0 == cpu_nchwc_block()
    finally:
        nchwc_layout.cache_clear()  # asked again, with scratch space, by the next caller


@pytest.mark.skipif(GPU_BUILD, reason="checks the CPU-only path; a GPU build takes the GPU")
def test_default_on_a_cpu_only_build_skips_the_gpu_providers_and_says_so():
    session, provider, fallbacks = open_session(MODEL)
    assert provider == CPU and session.get_providers()[0] == CPU
    assert [f.split(":")[0] for f in fallbacks] == [TENSORRT, CUDA]
    assert all("not in this onnxruntime build" in f for f in fallbacks)
    assert run_once(session).shape == (2, 2)


def test_provider_dropped_silently_by_onnxruntime_falls_back_to_cpu_with_reasons():
    if GPU_BUILD:
        pytest.skip("onnxruntime here would really use CUDA")
    # pretend the GPU providers are there: onnxruntime warns and builds a CPU session
    opened = open_session(MODEL, available=[TENSORRT, CUDA, CPU])
    assert isinstance(opened, OpenedSession) and opened.provider == CPU
    assert [f.split(":")[0] for f in opened.fallbacks] == [TENSORRT, CUDA]
    for reason in opened.fallbacks:
        assert "onnxruntime dropped it and chose CPUExecutionProvider" in reason
        assert "is not in available provider names" in reason  # onnxruntime's warning, kept
    assert run_once(opened.session).shape == (2, 2)


def test_provider_that_fails_to_initialise_falls_back_to_cpu_with_reasons():
    # an unknown provider makes onnxruntime raise; we asked it not to retry on its own
    fake = "RadHardNPUExecutionProvider"
    session, provider, fallbacks = open_session(MODEL.read_bytes(), preferred=[fake], available=[fake, CPU])
    assert provider == CPU
    [reason] = fallbacks
    assert reason.startswith(f"{fake}: session creation failed: ") and "Unknown Provider Type" in reason
    assert run_once(session).shape == (2, 2)


def test_both_failure_kinds_in_one_list_are_reported_in_order():
    if GPU_BUILD:
        pytest.skip("onnxruntime here would really use CUDA")
    fake = "FooExecutionProvider"
    _, provider, fallbacks = open_session(MODEL, preferred=[fake, CUDA, "BarExecutionProvider"], available=[fake, CUDA, CPU])
    assert provider == CPU
    assert [f.split(":")[0] for f in fallbacks] == [fake, CUDA, "BarExecutionProvider"]
    assert "session creation failed" in fallbacks[0]
    assert "dropped it" in fallbacks[1]
    assert "not in this onnxruntime build" in fallbacks[2]


def test_a_model_no_provider_can_open_raises_with_every_reason(capsys):
    with pytest.raises(SessionError) as err:
        open_session(b"not an onnx model", preferred=[CUDA], available=[CUDA, CPU])
    assert [r.split(":")[0] for r in err.value.reasons] == [CUDA, CPU]
    assert "INVALID_PROTOBUF" in str(err.value) or "InvalidProtobuf" in str(err.value)
    assert "EP Error" not in capsys.readouterr().out  # onnxruntime's own stdout fallback stays off


def test_session_options_threads():
    options = session_options_for(2)
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (2, 1)
    assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert session_options_for().intra_op_num_threads == 0  # onnxruntime's default
    assert session_options_for(1, optimization="basic").graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    with pytest.raises(ValueError, match="positive int"):
        session_options_for(0)
    with pytest.raises(ValueError, match="one of disable, basic, extended, all"):
        session_options_for(1, optimization="max")
    session, _, _ = open_session(MODEL, preferred=[CPU], threads=1)
    assert session.get_session_options().intra_op_num_threads == 1


@pytest.mark.skipif(not GPU_BUILD, reason="needs onnxruntime-gpu and a GPU")
def test_gpu_build_prefers_the_gpu():
    session, provider, fallbacks = open_session(MODEL)
    assert provider in (TENSORRT, CUDA), fallbacks
    assert session.get_providers()[0] == provider
    assert run_once(session).shape == (2, 2)


def test_a_bare_provider_name_is_refused_not_tried_letter_by_letter():
    """A string where a list of names belongs (found in audit: "CUDAExecutionProvider" was tried as "C", "U",
    "D"..., each a fallback "not in this onnxruntime build", and the session opened on the CPU)."""
    with pytest.raises(TypeError, match=r"got the one string 'CUDAExecutionProvider': pass it as a list"):
        providers_to_try(CUDA)
    with pytest.raises(TypeError, match="pass it as a list"):
        open_session(MODEL, CPU)
    assert providers_to_try([CUDA]) == [CUDA, CPU]
