"""What a run folder already holds, per prompt: finished candidates (with a readable image) are neither
regenerated nor re-scored, failed ones are verified again, so a rerun of the same folder resumes."""
from __future__ import annotations

import collections
import dataclasses
import logging

from ..core import runfolder as rf
from ..core.records import CandidateRecord

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Resume:
    """What the run folder already holds for a prompt: finished candidates, and ones whose verification failed."""

    finished: dict[tuple, CandidateRecord]
    failed: dict[tuple, CandidateRecord]


class ManifestIndex:
    """The folder's records by prompt, brought up to date (only what was appended since) before each prompt,
    so a prompt another writer finished after this process started is not redone."""

    def __init__(self, folder: rf.RunFolder):
        self.folder, self.tail = folder, rf.ManifestTail(folder.root)
        self.by_prompt: dict[str, dict[tuple, CandidateRecord]] = collections.defaultdict(dict)
        self.update()

    def update(self) -> None:
        for r in self.tail.read():
            held = self.by_prompt[r.prompt_hash]
            if r.status == "ok" or r.key not in held or held[r.key].status != "ok":  # rf.final_records' rule
                held[r.key] = r

    def resume(self, phash: str, regenerate_blocked: bool = False) -> Resume:
        """A prompt's finished (ok, blocked) and failed candidates whose image is still readable; the rest are
        redone (blocked ones too when ``regenerate_blocked``: safety.rewrite or a fallback pipeline is on)."""
        resume, unreadable = Resume({}, {}), 0
        for r in self.by_prompt.get(phash, {}).values():
            if r.status == "blocked" and regenerate_blocked:
                continue
            image = rf.run_file(self.folder.root, r.image)  # never a file outside the folder (a tampered record)
            video = rf.run_file(self.folder.root, r.video) if r.video else None
            if image is not None and rf.image_ok(image) and (r.video is None or (video is not None and video.exists())):
                (resume.finished if r.status != "failed" else resume.failed)[r.key] = r
            else:
                unreadable += 1
        if unreadable:
            log.warning("%d candidate image%s missing or unreadable in %s: regenerating them", unreadable,
                        "s are" if unreadable > 1 else " is", self.folder.root)
        return resume
