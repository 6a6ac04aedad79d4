"""VQAScore (Lin et al. 2024, "Evaluating Text-to-Visual Generation with Image-to-Text Generation") on
Qwen2.5-VL: the probability that the model's next token answers "Yes" to
'Does this figure show "{prompt}"? Please answer yes or no.' (the reference template), read from the logits
of one forward pass (no generation), softmax over the whole vocabulary, as t2v_metrics scores its Qwen2.5-VL
models (the first token of the answer "Yes", after the chat template's generation prompt). In [0, 1], higher is
better. Loading is the qwen verifier's (``load_qwen``: any Qwen2.5-VL checkpoint, NF4 on CUDA with
``load_in_4bit``); one batched forward per verification batch (right padding; each row read at its last token).
"""
from __future__ import annotations

import threading

import torch

from ..core.records import MetricScore
from ..core.torchutil import check_dtype
from .base import Verifier, VerifierError
from .qwen import _with_format, check_4bit, load_qwen

QUESTION = 'Does this figure show "{prompt}"? Please answer yes or no.'


class VQAScoreVerifier(Verifier):
    name = "vqascore"
    metrics = ("vqascore",)

    def __init__(self, model_name: str = "Qwen/Qwen2.5-VL-7B-Instruct", question: str = QUESTION,
                 answer: str = "Yes", max_side: int | None = None, choice_of_metric: str | None = "vqascore",
                 device: str = "auto", dtype: str = "auto", load_in_4bit: bool = False,
                 attn_implementation: str | None = None):
        super().__init__(choice_of_metric)
        if "{prompt}" not in question:
            raise VerifierError(f"verifier.question must contain {{prompt}}, got {question!r}")
        if not answer:
            raise VerifierError("verifier.answer must be a non-empty word (the reference's is Yes)")
        if max_side is not None and (not isinstance(max_side, int) or max_side < 28):
            raise VerifierError(f"verifier.max_side must be null or an integer >= 28, got {max_side!r}")
        check_dtype("verifier.dtype", dtype, allow_auto=True)
        self.model_name, self.question, self.answer, self.max_side = model_name, question, answer, max_side
        self.device, self.dtype, self.load_in_4bit = device, dtype, load_in_4bit
        self.attn_implementation = attn_implementation
        self._model = None
        self._lock = threading.Lock()  # the processor's padding side is set per call

    def check(self) -> None:
        check_4bit(self.load_in_4bit)

    def setup(self) -> None:
        self._model, self._proc = load_qwen(self.model_name, self.device, self.dtype, self.load_in_4bit,
                                            self.attn_implementation)
        self._answer_id = self._proc.tokenizer.encode(self.answer, add_special_tokens=False)[0]

    def chat(self, prompt: str) -> str:
        messages = [{"role": "user", "content": [{"type": "image"},
                                                 {"type": "text", "text": self.question.format(prompt=prompt)}]}]
        return self._proc.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    @torch.no_grad()
    def probabilities(self, prompts: list[str], images) -> torch.Tensor:
        """P(answer's first token | image, question), one per pair, from one batched forward."""
        images = [_with_format(im, self.max_side) if self.max_side else im.convert("RGB") for im in images]
        with self._lock:
            self._proc.tokenizer.padding_side = "right"
            inputs = self._proc(text=[self.chat(p) for p in prompts], images=images, padding=True,
                                return_tensors="pt")
        inputs = inputs.to(self._model.device)
        logits = self._model(**inputs).logits
        last = inputs["attention_mask"].sum(-1) - 1
        next_token = logits[torch.arange(len(prompts), device=logits.device), last].float()
        return next_token.softmax(-1)[:, self._answer_id]

    def score(self, prompts, images):
        values = self.probabilities(list(prompts), images).tolist()
        return [{"vqascore": MetricScore(score=v, explanation=f'P("{self.answer}") for "{self.question}"')}
                for v in values]
