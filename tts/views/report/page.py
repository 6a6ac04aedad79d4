"""The data the page's script draws the prompts section from: runs, metric names, a table of strings, and per
prompt each run's round bests with their image addresses."""
from __future__ import annotations

import base64
import os
import urllib.parse
from pathlib import Path

from ...core import runfolder as rf
from .runs import Run, best, round_bests
from .stats import metric_names

#: Explanations of every round's best are in the page up to this many prompts; beyond, the run's best only.
MAX_PROMPTS_EXPLAINED = 50
EXPLANATION_CHARS = 600



class Strings:
    """A table of distinct strings, so repeated explanations are written once."""

    def __init__(self):
        self.items: list[str] = []
        self._index: dict[str, int] = {}

    def __call__(self, text: str | None) -> int:
        if not text:
            return -1
        text = text if len(text) <= EXPLANATION_CHARS else text[:EXPLANATION_CHARS - 3] + "..."
        if text not in self._index:
            self._index[text] = len(self.items)
            self.items.append(text)
        return self._index[text]


class Images:
    """An image's address in the page: relative to the page's folder, or the file itself (``--embed``)."""

    def __init__(self, page_dir: Path, embed: bool):
        self.page_dir, self.embed = page_dir.resolve(), embed
        self._folders: dict[Path, str] = {}

    def __call__(self, folder: Path, name: str, mime: str = "image/png") -> str:
        if rf.run_file(folder, name) is None:  # a tampered record: nothing outside the run folder is shown
            return ""
        if self.embed:
            try:
                return f"data:{mime};base64," + base64.b64encode((folder / name).read_bytes()).decode()
            except OSError:
                return ""
        if folder not in self._folders:
            rel = Path(os.path.relpath(folder.resolve(), self.page_dir))
            self._folders[folder] = "".join(urllib.parse.quote(part, safe="@") + "/" for part in rel.parts
                                            if part != ".")
        return self._folders[folder] + "/".join(urllib.parse.quote(part, safe="@") for part in name.split("/"))


def page_data(runs: list[Run], images: Images) -> dict:
    """What the page's script draws the prompts from: runs, metric names, strings, and per prompt each run's
    round bests (image, score, seed, every metric; explanations for the run's best, or all while few prompts)."""
    names = metric_names(runs)
    index = {mid: n for n, mid in enumerate(names)}
    strings = Strings()
    per_run = [run.prompts() for run in runs]
    order: dict[str, tuple] = {}
    for n, prompts in enumerate(per_run):
        for p, recs in prompts.items():
            order.setdefault(p, (recs[0].prompt_index, n, recs[0].prompt_tags))
    explain_all = len(order) <= MAX_PROMPTS_EXPLAINED
    out = []
    for prompt, (pidx, _, tags) in sorted(order.items(), key=lambda kv: kv[1][:2]):
        rows = []
        for n, (run, prompts) in enumerate(zip(runs, per_run)):
            recs = prompts.get(prompt)
            bests = round_bests(recs, run.higher_is_better) if recs else {}
            if not bests:
                continue
            top = best(bests.values(), run.higher_is_better)
            srcs = [images(run.path, b.image) for b in bests.values()]
            prefix = os.path.commonprefix(srcs) if len(srcs) > 1 and not images.embed else ""
            tiles = [[k, src[len(prefix):], b.score, b.seed,
                      [[index[(v, m)], s.score, strings(s.explanation) if explain_all or b is top else -1]
                       for v, ms in b.scores.items() for m, s in ms.items() if (v, m) in index]]
                     for (k, b), src in zip(bests.items(), srcs)]
            row = {"run": n, "best": list(bests).index(top.round), "pre": prefix, "tiles": tiles}
            if top.video:  # a video run: the best candidate's MP4, played inline beside its keyframe strips
                row["video"] = images(run.path, top.video, "video/mp4")
            rows.append(row)
        out.append({"text": prompt, "n": pidx, "tags": _tags(tags), "runs": rows})
    return {"runs": [{"label": r.label, "colour": r.colour, "metric": index[(r.verifier, r.metric)]} for r in runs],
            "metrics": list(names.values()), "strings": strings.items, "prompts": out}


def _tags(tags: dict) -> str:
    return " · ".join(f"{k}={v}" for k, v in tags.items() if v not in (None, ""))

