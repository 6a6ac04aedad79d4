"""A run folder's file names: its fixed files, and the images and round JSONs named after a prompt (the reference
project's rule, byte for byte); ``run_file`` keeps a record's file name inside its folder."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

MANIFEST = "manifest.jsonl"
CONFIG = "config.json"
SUMMARY = "summary.json"
LOCK = ".tts.lock"
CLAIMS = ".claims"
MANIFESTS = "manifests"
PLAN = "plan.json"
PREVIEWS = "previews.jsonl"  # in-loop strategies' preview scores (never final scores)
JUDGES = "judges.jsonl"  # judges' scores of saved candidates (records.JudgeRecord; tts.run.judge, tts-judge)
STUDY = "study.jsonl"  # search.study_nfe_budget's allocation, one line per pass (records.StudyAllocation; tts.run.study)
SEARCHES = "searches.jsonl"  # one line per prompt whose in-loop search is complete (records.SearchRecord)



def prompt_hash(prompt: str) -> str:
    """The first 8 hex digits of SHA-256 of the prompt as given."""
    return hashlib.sha256(prompt.encode()).hexdigest()[:8]


def prompt_stem(prompt: str, max_length: int = 100) -> str:
    """``prompt@<name>_hash@<hash>``, tt-scale-flux's rule: every character of the stripped prompt that is
    not ASCII alphanumeric becomes ``_``, runs of ``_`` collapse, and when the stem is longer than
    ``max_length`` the name is cut to ``max_length - 8 - 7`` characters. Only ``[A-Za-z0-9_@]``, so no
    prompt can name a path outside the folder."""
    name = re.sub(r"_+", "_", re.sub(r"[^a-zA-Z0-9]", "_", prompt.strip()))
    stem = f"prompt@{name}_hash@{prompt_hash(prompt)}"
    if len(stem) > max_length:
        stem = f"prompt@{name[:max_length - 8 - 7]}_hash@{prompt_hash(prompt)}"
    return stem


def image_name(prompt: str, round_: int, seed: int) -> str:
    return f"{prompt_stem(prompt)}_i@{round_}_s@{seed}.png"


def candidate_image_name(prompt: str, round_: int, index: int) -> str:
    """An in-loop strategy's candidate: no single seed names it (its path branches and re-noises), so its
    index in the round does: ``<stem>_i@<round>_c@<index>.png`` (its record holds the whole path)."""
    return f"{prompt_stem(prompt)}_i@{round_}_c@{index}.png"


def round_json_name(prompt: str, round_: int, seed: int | None) -> str:
    """A round's JSON is named after its best image (``..._i@<round>_s@<seed>.json``), as the reference
    project names it; a round with no scored candidate has no best seed: ``..._i@<round>.json``."""
    tail = f"_s@{seed}" if seed is not None else ""
    return f"{prompt_stem(prompt)}_i@{round_}{tail}.json"



#: Round JSONs, tt-scale-flux's process_results.py pattern (and tts before 0.3: no ``_s@``).
ROUND_JSON = re.compile(r"prompt@(.+?)_hash@([^_]+)_i@(\d+)(?:_s@(\d+))?\.json$")



def run_file(root: Path | str, name) -> Path | None:
    """``root / name`` when it names a file inside the run folder (a record's ``image``); None for anything else
    (absolute, ``..``, a link out of the folder): a tampered manifest never makes a reader open another file."""
    if not isinstance(name, str) or not name or "\x00" in name or "\\" in name:
        return None
    if Path(name).is_absolute() or ".." in Path(name).parts:
        return None
    try:
        base = Path(root).resolve()
        full = (base / name).resolve()
    except (OSError, RuntimeError):
        return None
    return Path(root) / name if base in full.parents else None

