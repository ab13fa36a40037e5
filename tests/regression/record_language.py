"""Record the language models' reference fingerprints: 30 training steps of
configs/shakespeare_char.yaml (the temporal PC model and its BPTT twin) on a small
corpus written here, seed 0, CPU. Recorded on commit 2d83922 (before the second
redesign) at 2 torch threads; recorded there again at 1 thread, the hashes were the
same (these small models round alike at either count). It refuses to overwrite them
without --force:

    python -m tests.regression.record_language --force
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch

OUT = Path(__file__).with_name("language_30_steps.json")
REPO = Path(__file__).resolve().parents[2]
STEPS = 30
THREADS = 2
MODELS = {"temporal_pc": "pcn_lightning.TemporalPCNModule", "temporal_twin": "pcn_lightning.TemporalTwin"}
CORPUS = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
          "First Citizen:\nYou are all resolved rather to die than to famish?\n\n") * 40


# Settings the config has changed since the recording, pinned back to the recorded ones.
RECORDED_WITH = {"pcn_lightning.TemporalPCNModule": [
    "--model.init_args.label_precision", "0.01", "--model.init_args.inference.T_infer", "4",
    "--model.init_args.inference.eta_infer", "0.5", "--model.init_args.inference.schedule", "parallel",
    "--model.init_args.inference.step_size", "normalized", "--model.init_args.learning.weight_errors", "settled"]}


def run_args(model: str, corpus_dir: str) -> list[str]:
    """The shipped config, made cheap: a small model, short sequences, 30 steps."""
    return [*_config_args(model, corpus_dir), *RECORDED_WITH.get(model, [])]


def _config_args(model: str, corpus_dir: str) -> list[str]:
    return ["--config", str(REPO / "configs/shakespeare_char.yaml"), "--model.class_path", model,
            "--data.data_dir", corpus_dir, "--data.batch_size", "4", "--data.seq_len", "16",
            "--model.hidden", "32", "--trainer.max_steps", str(STEPS), "--trainer.accelerator", "cpu",
            "--trainer.limit_val_batches", "1", "--trainer.val_check_interval", str(STEPS),
            "--trainer.enable_progress_bar", "false", "--test", "false"]


def write_corpus(folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "input.txt").write_text(CORPUS)
    return str(folder)


def trained_state(model: str, workdir: Path) -> dict:
    from pcn_lightning import cli

    corpus = write_corpus(workdir / "corpus")
    rc = cli.main(run_args(model, corpus) + ["--trainer.logger.init_args.save_dir", str(workdir),
                                             "--trainer.default_root_dir", str(workdir)])
    assert rc == 0, model
    state = torch.load(next(workdir.rglob("last.ckpt")), map_location="cpu", weights_only=False)
    assert state["global_step"] == STEPS, state["global_step"]
    return state["state_dict"]


def main() -> None:
    import hashlib

    if OUT.exists() and "--force" not in sys.argv:
        raise SystemExit(f"{OUT} holds the reference; pass --force to overwrite it")
    torch.set_num_threads(THREADS)
    ref = {}
    for name, model in MODELS.items():
        with tempfile.TemporaryDirectory() as d:
            state = trained_state(model, Path(d))
            ref[name] = {k: hashlib.sha256(v.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
                         for k, v in state.items() if k.startswith("net.")}
            print(name, len(ref[name]), "tensors")
    OUT.write_text(json.dumps(ref, indent=1))


if __name__ == "__main__":
    main()
