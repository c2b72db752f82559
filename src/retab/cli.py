"""`retab <command> [flags]` (also `python -m retab`): dispatch to a stage's `main(argv)`.

Bad input raises RetabError anywhere below; it is printed here as one line, exit status 2.
"""
from __future__ import annotations

import importlib
import sys

from retab.misc.errors import RetabError, one_line
from retab.misc.steps import run_step

# command -> (module under retab.stages, one-line description)
COMMANDS = {
    "synth_voc": ("synth_voc", "generate the synthetic mini-VOC in the VOC 2012 layout"),
    "make_splits": ("make_splits", "derive train_aug, cls_labels and the fold lists from a VOC tree"),
    "use_dataset": ("use_dataset", "a driver's dataset: chosen (or generated), linked as VOC2012, listed"),
    "use_psa_outputs": ("use_psa_outputs", "PSA's outputs checked and linked as RETAB reads them"),
    "evaluation": ("evaluation", "PSA evaluation: mIoU of label PNGs or CAM dicts (curve mode)"),
    "evaluation_boundary": ("evaluation_boundary", "RETAB evaluation: all/base/novel mIoU of a fold"),
    "train_cls": ("train_cls", "train the ResNet-38 classification (CAM) network"),
    "infer_cls": ("infer_cls", "multi-scale CAMs and CRF label dicts"),
    "train_aff": ("train_aff", "train the PSA AffinityNet baseline from CRF labels"),
    "infer_aff": ("infer_aff", "PSA random walk of the CAMs"),
    "train_boundary": ("train_boundary", "train the boundary net on the base samples of a fold"),
    "prop_boundary_target": ("prop_boundary_target", "boundary target maps (non-boundary pixels)"),
    "train_affmixed_boundary": ("train_affmixed_boundary", "train the mixed affinity net of a fold"),
    "infer_aff_cam_boundary": ("infer_aff_cam_boundary", "RETAB random walk, stage 1"),
    "infer_aff_cam_boundary_secondary": ("infer_aff_cam_boundary_secondary", "RETAB random walk, stage 2"),
    "check_settings": ("check_settings", "check a driver's environment settings before its first step"),
    "check_weights": ("check_weights", "check that a trained checkpoint loads strictly into a network"),
    "convert_cams": ("convert_cams", "convert CAMs of other code bases (IRN) to the score-dict format"),
    "train_seg": ("train_seg", "train the segmentation network (mixed supervision)"),
    "infer_seg": ("infer_seg", "multi-scale segmentation inference"),
    "demo": ("demo", "run the whole pipeline on the mini-VOC and print the result table"),
}


def run_stage(command: str, argv=None) -> int:
    """Run one stage (timed as a driver's step when RETAB_STEP is set, retab.misc.steps); RetabError
    becomes a one-line message and exit status 2."""
    module_name, _ = COMMANDS[command]
    argv = list(sys.argv[1:] if argv is None else argv)

    def run() -> int:
        try:
            module = importlib.import_module(f"retab.stages.{module_name}")
            rc = module.main(argv)
        except RetabError as exc:
            print(f"{command}: error: {one_line(exc)}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(f"{command}: interrupted", file=sys.stderr)
            return 130
        return int(rc or 0)

    return run_step(command, argv, run)


def usage() -> str:
    lines = ["usage: retab <command> [flags]   (retab <command> -h for a command's flags)", "", "commands:"]
    lines += [f"  {name:<34}{desc}" for name, (_, desc) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"retab: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    return run_stage(command, rest)
