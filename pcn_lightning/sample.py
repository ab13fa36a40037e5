"""Generate text with a trained character model.

    python -m pcn_lightning.sample --ckpt logs/shakespeare_char/version_0/checkpoints/best-....ckpt \\
        --prompt "ROMEO:" --chars 500 [--temperature 0.8] [--seed 0]

Prints the prompt and its continuation. Works for the character models' checkpoints: `TemporalPCNModule`,
`TemporalTwin`, `TransformerPCNModule` and `TransformerTwin`.
The checkpoint is read weights-only: a file that asks to run code is refused (exit 2).
"""

from __future__ import annotations

import argparse
import sys

import torch

from pcn_lightning.errors import PCNError


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--prompt", default="ROMEO:")
    ap.add_argument("--chars", type=int, default=500)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    from pcn_lightning.checkpoints import load_module

    try:
        if args.chars < 0 or not args.temperature > 0:
            raise PCNError("--chars must be >= 0 and --temperature > 0")
        model = load_module(args.ckpt, ("TemporalPCNModule", "TemporalTwin", "TransformerPCNModule", "TransformerTwin"),
                            flag="--ckpt")
        text = model.sample(args.prompt, args.chars, args.temperature, torch.Generator().manual_seed(args.seed))
    except PCNError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(args.prompt + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
