"""Record the float64 references: the shipped configs (and the settings the bitwise
references pin), trained 30 steps at `--trainer.precision 64-true` (seed 0, CPU), each
weight tensor's float64 projections on fixed random directions and its norm.

Why float64: a float32 run's last bits depend on the CPU's kernels (AVX2, AVX512, ARM)
and thread count, and 30 Adam steps amplify them, so a bitwise reference only runs
where it was recorded. In float64 those differences stay near 1e-13 of a weight's
norm (measured: `tests/integration/test_regression.py` states the tolerance and why),
while any change of the arithmetic a refactor could make moves a weight by far more.
Recorded on commit 0cae807 (before the third redesign), 2026-12-08, AVX2, 2 threads;
it refuses to overwrite the references without --force:

    python -m tests.regression.record_float64 --force
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch

from tests.regression import record_language as language
from tests.regression.fingerprint import RECORDED_WITH, RUNS, fingerprint, run_args

OUT = Path(__file__).with_name("float64_30_steps.json")
REPO = Path(__file__).resolve().parents[2]
FLOAT64 = ["--trainer.precision", "64-true"]
TRANSFORMER_LAYERS = ('[{token_dense: {units: 8}, position: {}}, {transformer_block: {heads: 2, mlp_ratio: 2}}, '
                      '{rmsnorm: {}, token_dense: {}}]')


def transformer_args(model: str, corpus_dir: str) -> list[str]:
    return ["--config", str(REPO / "configs/shakespeare_transformer.yaml"), "--model.class_path", model,
            "--data.data_dir", corpus_dir, "--data.batch_size", "4", "--data.seq_len", "16",
            "--model.context", "16", "--model.layers", TRANSFORMER_LAYERS, "--trainer.max_steps", str(language.STEPS),
            "--trainer.accelerator", "cpu", "--trainer.limit_val_batches", "1",
            "--trainer.val_check_interval", str(language.STEPS), "--trainer.enable_progress_bar", "false",
            "--test", "false"]


def runs() -> dict:
    """name -> (args for a corpus folder or None) maker: every run the references hold."""
    out = {}
    for name, config in RUNS.items():
        out[name] = lambda corpus, c=config, n=name: run_args(c) + RECORDED_WITH.get(n, [])
    out["fashion_mnist_on_arrival"] = lambda corpus: run_args(RUNS["fashion_mnist"])  # as shipped
    out["fashion_mnist_conv"] = lambda corpus: run_args("configs/fashion_mnist_conv.yaml") + [
        "--data.batch_size", "16"]
    for name, model in language.MODELS.items():
        out[name] = lambda corpus, m=model: language.run_args(m, corpus)
    out["temporal_pc_on_arrival"] = lambda corpus: language._config_args(language.MODELS["temporal_pc"], corpus)
    out["transformer_pc"] = lambda corpus: transformer_args("pcn_lightning.TransformerPCNModule", corpus)
    out["transformer_twin"] = lambda corpus: transformer_args("pcn_lightning.TransformerTwin", corpus)
    return out


def trained_weights(name: str, workdir: Path) -> dict:
    """The run's weights after 30 float64 steps: {state-dict key: tensor}."""
    from pcn_lightning import cli

    corpus = language.write_corpus(workdir / "corpus")
    args = runs()[name](corpus) + FLOAT64 + ["--trainer.logger.init_args.save_dir", str(workdir),
                                             "--trainer.default_root_dir", str(workdir)]
    assert cli.main(args) == 0, name
    state = torch.load(next(workdir.rglob("last.ckpt")), map_location="cpu", weights_only=False)
    assert state["global_step"] == language.STEPS, state["global_step"]
    weights = {k: v for k, v in state["state_dict"].items() if k.startswith("net.") or "precision" in k}
    assert all(v.dtype == torch.float64 for v in weights.values() if v.is_floating_point()), name
    return weights


def main() -> None:
    if OUT.exists() and "--force" not in sys.argv:
        raise SystemExit(f"{OUT} holds the reference of the pre-redesign code; pass --force to overwrite it")
    torch.set_num_threads(2)
    ref = {}
    for name in runs():
        with tempfile.TemporaryDirectory() as d:
            ref[name] = {k: fingerprint(v) for k, v in trained_weights(name, Path(d)).items()}
            print(name, len(ref[name]), "tensors", flush=True)
    OUT.write_text(json.dumps(ref, indent=1))


if __name__ == "__main__":
    main()
