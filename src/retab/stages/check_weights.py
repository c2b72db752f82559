"""`retab check_weights --kind aff --weights FILE.pth [--backbone B] [--width W]`: does a trained checkpoint load
into that network exactly as an inference stage would load it (strict, `module.` prefix accepted)?

The drivers run it on a checkpoint they are given (run_retab.sh's AFF_WEIGHTS) before any
training, so that a wrong file stops the run at once rather than after hours of training. Reads
the file only (torch.load with weights_only=True); prints one line on success, and a one-line
error naming the file and what does not fit otherwise (exit status 2).
"""
from __future__ import annotations

import argparse

from retab.models import MODEL_FACTORIES, build_model
from retab.engines.stage_support import add_runtime_args, load_trained_weights


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="retab check_weights", description=__doc__.splitlines()[0])
    p.add_argument("--kind", required=True, choices=sorted({kind for kind, _ in MODEL_FACTORIES}),
                   help="the network the file must hold")
    p.add_argument("--weights", required=True, help="the trained checkpoint (.pth)")
    add_runtime_args(p)  # --backbone and --width of that network (--device and --seed unused)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    model = build_model(args.kind, args.width, args.backbone)
    load_trained_weights(model, args.weights)
    print(f"{args.weights}: loads strictly into {type(model).__name__} of width {args.width:g}")
    return 0
