"""Where a stage writes, checked before any work: never onto one of its inputs (or the dataset),
never two outputs into one folder, and only where writing is possible."""
from __future__ import annotations

import os
from pathlib import Path

from retab.misc.errors import RetabError

DATASET_FOLDERS = ("JPEGImages", "Annotations", "SegmentationClass", "SegmentationClassAug")


def dataset_inputs(voc_root) -> dict[str, Path]:
    """The dataset's folders as input folders of a stage (flag -> folder), for check_outputs."""
    if not voc_root:
        return {}
    root = Path(voc_root)
    return {"--voc12_root": root, **{f"--voc12_root's {name}": root / name for name in DATASET_FOLDERS}}


def _resolved(path) -> str:
    # realpath follows every link of the part that exists, so a link to an input is that input
    return os.path.realpath(os.path.abspath(os.fspath(path)))


def check_writable(folder, flag: str) -> None:
    """Refuse, before any work, an output folder that cannot be created or written: a read-only
    folder, or a part of its path that is a file (the first write would come after hours of work)."""
    path = Path(os.path.abspath(os.fspath(folder)))
    existing = path
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        where = "is a file" if existing == path else f"cannot be created: {existing} is a file"
        raise RetabError(f"{flag} {folder} {where}, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "is" if existing == path else f"cannot be created: {existing} is"
        raise RetabError(f"{flag} {folder} {where} not writable")


def check_outputs(outputs: dict, inputs: dict) -> None:
    """Refuse, before any work, an output folder (flag -> folder; None: not written) that is, or
    resolves to, one of the stage's input folders (flag -> folder) or another of its output
    folders, or that cannot be written (check_writable)."""
    read = {_resolved(folder): (flag, folder) for flag, folder in inputs.items() if folder}
    written = {}
    for flag, folder in outputs.items():
        if not folder:
            continue
        check_writable(folder, flag)
        key = _resolved(folder)
        for kind, seen in (("the input folder", read), ("also the output folder", written)):
            if key in seen:
                other_flag, other = seen[key]
                named = "" if os.fspath(other) == os.fspath(folder) else f" {other}"
                raise RetabError(f"{flag} {folder} is {kind} {other_flag}{named}: its files would be replaced; "
                                 f"give {flag} a folder of its own")
        written[key] = (flag, folder)
