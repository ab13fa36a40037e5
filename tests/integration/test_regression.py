"""The redesign changed no number: the shipped configs, trained 30 steps (seed 0,
CPU) by today's code, give the weights recorded on the code before it."""

import hashlib
import json
from pathlib import Path

import pytest
import torch

from pcn_lightning import cli
from tests.regression import record_language as language
from tests.regression.fingerprint import (CPU_CAPABILITY, RECORDED_WITH, RECORDINGS, RUNS, fingerprint,
                                          recording_threads, relative_distance, run_args)

REFERENCES = {n: json.loads((Path(__file__).parents[1] / "regression" / f).read_text()) for n, f in RECORDINGS.items()}


def old_name(module_key: str, named: dict) -> str:
    """The pre-redesign state-dict key of a parameter (net.weights.l, net.readout, net.amort.l)."""
    return named[module_key]


def current_weights(name: str, tmp_path: Path) -> dict:
    rc = cli.main(run_args(RUNS[name]) + RECORDED_WITH.get(name, []) + ["--trainer.logger.init_args.save_dir", str(tmp_path),
                                          "--trainer.default_root_dir", str(tmp_path)])
    assert rc == 0
    ckpt = torch.load(next(tmp_path.rglob("last.ckpt")), map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 30
    state = ckpt["state_dict"]
    # the old names: W(l) and the readout in eta_learn order, the amortizer's V(l)
    terms = sorted({k.split(".")[2] for k in state if k.startswith("net.terms.")}, key=int)
    out = {}
    for i, k in enumerate(terms):
        key = "net.readout" if i == len(terms) - 1 else f"net.weights.{i}"
        out[key] = state[f"net.terms.{k}.map.weight"]
    for k in sorted({k.split(".")[2] for k in state if k.startswith("net.amortizer.")}, key=int):
        out[f"net.amort.{k}"] = state[f"net.amortizer.{k}.map.weight"]
    return out


@pytest.fixture
def threads():
    """A recorded thread count (rounding depends on it): 1 in a pytest-xdist worker,
    where a second thread would oversubscribe the cores beside the other worker."""
    before = torch.get_num_threads()
    n = recording_threads()
    torch.set_num_threads(n)
    yield n
    torch.set_num_threads(before)


# On another kernel family (AVX512, ARM) a float32 run rounds differently, and 30 Adam
# steps carry that into the weights: there the float32 runs are compared within this
# relative distance, a coarse check (the tight one, on every CPU, is the float64 guard
# below).
FLOAT32_OTHER_KERNELS = 1e-3


def same_kernels() -> bool:
    return torch.backends.cpu.get_cpu_capability() == CPU_CAPABILITY


def assert_float32_matches(got: dict, ref: dict, name: str) -> None:
    """Bitwise equal where the recording's kernels run; within FLOAT32_OTHER_KERNELS elsewhere."""
    for key, tensor in got.items():
        fp = fingerprint(tensor)
        assert fp["shape"] == ref[key]["shape"], key
        if same_kernels():  # bitwise equal (torch.equal), not merely close
            assert fp["sha256"] == ref[key]["sha256"], f"{key}: relative distance {relative_distance(fp, ref[key]):.2e}"
        else:
            distance = relative_distance(fp, ref[key])
            assert distance <= FLOAT32_OTHER_KERNELS, (
                f"{name} {key}: relative distance {distance:.2e} on {torch.backends.cpu.get_cpu_capability()} "
                f"kernels (recorded on {CPU_CAPABILITY})")


@pytest.mark.parametrize("name", sorted(RUNS))
def test_thirty_steps_reproduce_the_pre_redesign_weights(name, tmp_path, threads):
    weights = current_weights(name, tmp_path)
    ref = REFERENCES[threads][name]
    assert sorted(weights) == sorted(ref)
    assert_float32_matches(weights, ref, name)


LANGUAGE_REFERENCE = json.loads((Path(__file__).parents[1] / "regression" / "language_30_steps.json").read_text())


LANGUAGE_FINGERPRINTS = json.loads((Path(__file__).parents[1] / "regression" / "language_30_steps_fingerprints.json").read_text())


@pytest.mark.parametrize("name", sorted(language.MODELS))
def test_thirty_steps_reproduce_the_language_models_weights(name, tmp_path, threads):
    """The temporal PC model and its twin: 30 steps bitwise equal to the recording made
    on the code before the second redesign (commit 2d83922; recorded there at 2 threads
    and again at 1, with the same hashes); on other kernels, within FLOAT32_OTHER_KERNELS
    of the fingerprints recorded on 0cae807 (which reproduced those hashes)."""
    state = language.trained_state(language.MODELS[name], tmp_path)
    weights = {k: v for k, v in state.items() if k.startswith("net.")}
    if same_kernels():
        got = {k: hashlib.sha256(v.detach().cpu().contiguous().numpy().tobytes()).hexdigest() for k, v in weights.items()}
        assert got == LANGUAGE_REFERENCE[name]
    assert sorted(weights) == sorted(LANGUAGE_FINGERPRINTS[name])
    assert_float32_matches(weights, LANGUAGE_FINGERPRINTS[name], name)


FLOAT64_REFERENCE = json.loads((Path(__file__).parents[1] / "regression" / "float64_30_steps.json").read_text())
# How far two float64 runs of the same arithmetic may drift apart: reordered sums (another
# thread count or kernel family) change a float64 weight in its last bits, about 1e-16 of
# its norm, and 30 Adam steps amplify that by orders of magnitude at most (measured on
# AVX2, 2026-12-08: the distance between 1 and 2 threads was 0.0 in every run); a changed
# rule, step size or schedule moves the weights by 1e-6 of their norm and far more. The
# tolerance sits between, far from both.
FLOAT64_TOLERANCE = 1e-9


@pytest.mark.parametrize("name", sorted(FLOAT64_REFERENCE))
def test_thirty_float64_steps_reproduce_the_pre_redesign_weights(name, tmp_path):
    """Runs on every CPU (no skip): float64 training is the guard that survives the
    kernel family and thread count the float32 bitwise references depend on."""
    from tests.regression.record_float64 import trained_weights

    weights = trained_weights(name, tmp_path)
    ref = FLOAT64_REFERENCE[name]
    assert sorted(weights) == sorted(ref)
    for key, tensor in weights.items():
        fp = fingerprint(tensor)
        assert fp["shape"] == ref[key]["shape"], key
        distance = relative_distance(fp, ref[key])
        assert distance <= FLOAT64_TOLERANCE, f"{name} {key}: relative distance {distance:.2e}"
