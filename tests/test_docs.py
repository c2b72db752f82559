"""The README stays a short page for users, and every file it names exists."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_is_short():
    assert len(README.splitlines()) <= 180


def test_every_repository_path_the_readme_names_exists():
    named = set(re.findall(r"`((?:src|docs|tests|tools|benchmarks|psa|RETAB|seg|VOC2012_supp)/[^`\s]*)`", README))
    named |= set(re.findall(r"\]\(((?:docs|src)/[^)]+)\)", README))
    assert len(named) >= 5
    # what a user puts or a run writes (weights, outputs) is no file of the repository
    user_files = ("/pretrained_model/", "/best/", "/out/", "voc12/")
    named = {p for p in named if "{" not in p and not any(u in p for u in user_files)}
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert missing == []
