"""The scripted front-end: choices from a file, or from the run's verifier acting as a simulated person.

``script=PATH``: either a text file whose line r is round r's answer (``3 5``, ``r``, ``q``; the grammar
of tts.search.frontends), or a run folder's ``feedback.jsonl`` (answers matched by prompt and round),
which replays a recorded session. A round the script does not cover stops the session.
``simulate_top_k=K``: pick the K candidates the verifier scores best (in its metric's direction), best first, after adding
Gaussian noise of standard deviation ``simulate_noise`` (a seeded, imperfect person); failed
candidates are never picked.
"""
from __future__ import annotations

import random
from pathlib import Path

from ...core.validate import check_number, check_positive_int
from .. import oriented
from . import Choice, parse_answer
from .feedback import Answer, FeedbackLog


class ScriptedFrontend:
    name = "scripted"
    interactive = False

    def __init__(self, script: str | None = None, simulate_top_k: int | None = None, simulate_noise: float = 0.0,
                 seed: int = 0):
        if (script is None) == (simulate_top_k is None):
            raise ValueError("search/frontend=scripted needs exactly one of search.frontend.script=PATH (answers per "
                             "round, or a feedback.jsonl) or search.frontend.simulate_top_k=K (the verifier picks)")
        if simulate_top_k is not None:
            check_positive_int("search.frontend.simulate_top_k", simulate_top_k)
        check_number("search.frontend.simulate_noise", simulate_noise, 0.0)
        self.script, self.top_k, self.noise, self.seed = script, simulate_top_k, float(simulate_noise), seed
        self._lines: list[str] | None = None
        self._log: dict[tuple[str, int], Answer] | None = None
        if script is not None:
            path = Path(script).expanduser()
            if not path.exists():
                raise FileNotFoundError(f"search.frontend.script {script!r} does not exist")
            if path.suffix == ".jsonl":
                self._log = {(a.prompt_hash, a.round): a for a in FeedbackLog(path).answers()}
            else:
                self._lines = path.read_text().splitlines()

    def present(self, round_, prompt, items, run_dir) -> Choice:
        if self.top_k is not None:
            return self._simulate(round_, prompt, items)
        if self._log is not None:
            from ...core.runfolder import prompt_hash

            answer = self._log.get((prompt_hash(prompt), round_))
            if answer is None:
                return Choice([], "stop", True)
            resumed_later = (prompt_hash(prompt), round_ + 1) in self._log  # the session went on after a stop
            return Choice(list(answer.picks), answer.action, bool(answer.stop) and not resumed_later)
        if round_ > len(self._lines):
            return Choice([], "stop", True)
        return parse_answer(self._lines[round_ - 1], len(items))

    def _simulate(self, round_, prompt, items) -> Choice:
        rng = random.Random(f"{self.seed}:{prompt}:{round_}")
        scored = [(oriented(item.score, item.higher_is_better) + (rng.gauss(0.0, self.noise) if self.noise else 0.0),
                   item.number) for item in items if item.score is not None]
        if not scored:
            return Choice([], "reject")
        scored.sort(key=lambda t: (-t[0], t[1]))
        return Choice([number for _, number in scored[:self.top_k]], "pick")
