"""Record the reference fingerprints (run once per thread count, on the code before
the redesign, commit f3e01e2, with this folder copied onto it; it refuses to
overwrite them without --force):

    python -m tests.regression.record --threads 2 --force
    python -m tests.regression.record --threads 1 --force
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

from pcn_lightning import cli
from tests.regression.fingerprint import RECORDINGS, RUNS, fingerprint, run_args

def main() -> None:
    import sys

    threads = int(sys.argv[sys.argv.index("--threads") + 1]) if "--threads" in sys.argv else 2
    out = Path(__file__).with_name(RECORDINGS[threads])
    if out.exists() and "--force" not in sys.argv:
        raise SystemExit(f"{out} holds the reference of the pre-redesign code; pass --force to overwrite it")
    torch.set_num_threads(threads)
    ref = {}
    for name, config in RUNS.items():
        with tempfile.TemporaryDirectory() as d:
            rc = cli.main(run_args(config) + ["--trainer.logger.init_args.save_dir", d,
                                              "--trainer.default_root_dir", d])
            assert rc == 0, name
            ckpt = next(Path(d).rglob("last.ckpt"))
            state = torch.load(ckpt, map_location="cpu", weights_only=False)
            assert state["global_step"] == 30, state["global_step"]
            ref[name] = {k: fingerprint(v) for k, v in state["state_dict"].items() if k.startswith("net.") or "precision" in k}
            print(name, list(ref[name]))
    out.write_text(json.dumps(ref, indent=1))


if __name__ == "__main__":
    main()
