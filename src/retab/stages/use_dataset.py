"""`retab use_dataset`: the dataset of a driver's folder, chosen, linked and listed (its first step).

The VOC-layout tree is --voc12home when given, else the first CANDIDATE folder that exists, else
--mini_voc, generated there first (`retab synth_voc` at --scale) when absent. It is linked as
--link (VOC2012, what every stage reads; a link to another tree is replaced, a real folder never),
then its lists are derived into --list_dir (`retab make_splits`: nothing to do over complete lists
of the same tree). A rerun over a linked, listed tree has nothing to do.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from retab.misc import steps
from retab.misc.args import setup_logging
from retab.misc.errors import RetabError
from retab.misc.fileio import link_folder
from retab.stages import make_splits, synth_voc


def choose_dataset(voc12home, candidates, mini_voc) -> tuple[Path, bool]:
    """(the tree to use, whether it must be generated first)."""
    if voc12home:
        if not Path(voc12home).is_dir():
            raise RetabError(f"VOC12HOME={voc12home} is not a folder")
        return Path(voc12home), False
    for candidate in candidates:
        if Path(candidate).is_dir():
            return Path(candidate), False
    if mini_voc is None:
        raise RetabError(f"no dataset: none of {', '.join(candidates) or 'the candidates'} exists "
                         "and no --mini_voc to generate")
    return Path(mini_voc), not Path(mini_voc).is_dir()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="retab use_dataset", description=__doc__.split("\n\n")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("candidates", nargs="*", metavar="CANDIDATE", help="VOC-layout trees, the first that exists")
    p.add_argument("--voc12home", default=None, help="the tree to use (the drivers' VOC12HOME); must exist")
    p.add_argument("--mini_voc", default=None, help="without any: the mini-VOC here, generated when absent")
    p.add_argument("--scale", choices=list(synth_voc.SCALES), default=None, help="the generated mini-VOC's size")
    p.add_argument("--link", default="VOC2012", help="the link to the tree [VOC2012]")
    p.add_argument("--list_dir", default="voc12", help="the folder of its lists [voc12]")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    tree, generate = choose_dataset(args.voc12home, args.candidates, args.mini_voc)
    idle = []  # per part: found its work done
    if generate:
        synth_voc.main(["--out", str(tree), *(["--scale", args.scale] if args.scale else [])])
        idle.append(steps.take_nothing_to_do())
    if link_folder(args.link, tree):
        print(f"linked ./{args.link} -> {tree.resolve()}", flush=True)
        idle.append(False)
    make_splits.main(["--voc12_root", args.link, "--out_dir", args.list_dir])
    idle.append(steps.take_nothing_to_do())
    if all(idle):
        steps.nothing_to_do()
    return 0
