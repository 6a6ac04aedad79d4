"""Qwen2.5-VL as a local six-metric grader (the reference project's open VLM verifier; Ma et al.
2025, Sec. 4), through transformers, with outlines constraining decoding to the grading JSON schema.

The same grading template and schema as the API verifiers; the integer scores are a ``Literal`` of
0-10 and explanations are bounded in length, because outlines does not enforce numeric bounds and a
truncated answer at ``max_new_tokens`` does not raise (outlines' JSON-schema guide); every answer is
validated again with :func:`grading.parse_grades`. One batched ``generate`` per verification batch,
greedy. Loading: ``Qwen2_5_VLForConditionalGeneration.from_pretrained`` plus the checkpoint's
tokenizer and PIL image processor in an image-only processor (no video processor, so no torchvision).
"""
from __future__ import annotations

import logging
import threading
from typing import Literal

from pydantic import BaseModel, Field, create_model

from ..core.torchutil import check_dtype, resolve_device, resolve_dtype
from ..core.validate import check_positive_int, install_hint
from . import grading
from .base import Verdict, Verifier

log = logging.getLogger(__name__)
Score = Literal[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]


class QwenVerifier(Verifier):
    name = "qwen"
    metrics = grading.METRICS

    takes_video = True  # a video: one labelled keyframe grid (grading.video_as_grid)

    def __init__(self, model_name: str = "Qwen/Qwen2.5-VL-7B-Instruct", choice_of_metric: str | None = "overall_score",
                 prompt_path: str | None = None, max_new_tokens: int = 1024, max_explanation_chars: int = 300,
                 max_side: int = 512, device: str = "auto", dtype: str = "auto", load_in_4bit: bool = False,
                 attn_implementation: str | None = None):
        super().__init__(choice_of_metric)
        grading.check_image_args(max_side, "png")
        check_positive_int("verifier.max_new_tokens", max_new_tokens)
        check_positive_int("verifier.max_explanation_chars", max_explanation_chars)
        check_dtype("verifier.dtype", dtype, allow_auto=True)
        self.model_name, self.max_new_tokens, self.max_side = model_name, max_new_tokens, max_side
        self.max_explanation_chars, self.device, self.dtype = max_explanation_chars, device, dtype
        self.load_in_4bit, self.attn_implementation = load_in_4bit, attn_implementation
        self.template = grading.load_template(prompt_path)
        self._generator = None
        # outlines' Generator keeps per-call guide state in one logits processor: two calls at once (the
        # loop verifies batches on worker threads) would advance each other's guides, so one at a time.
        self._lock = threading.Lock()

    def check(self) -> None:
        for module, hint in (("outlines", "pip install outlines"), ("transformers", "pip install transformers")):
            try:
                __import__(module)
            except ImportError:
                raise ImportError(f"verifier=qwen needs {module}: {hint}") from None
        check_4bit(self.load_in_4bit)

    def setup(self) -> None:
        import outlines

        model, processor = load_qwen(self.model_name, self.device, self.dtype, self.load_in_4bit,
                                     self.attn_implementation)
        self._generator = outlines.Generator(outlines.from_transformers(model, processor), self._answer_model())

    def _answer_model(self) -> type[BaseModel]:
        grade = create_model("MetricGrade", explanation=(str, Field(max_length=self.max_explanation_chars)),
                             score=(Score, ...))
        return create_model("Grades", **{m: (grade, ...) for m in grading.METRICS})

    def score(self, prompts, images):
        import outlines

        images = [grading.video_as_grid(self, img) for img in images]  # a video: one labelled keyframe grid
        chats = [outlines.inputs.Chat([{"role": "user", "content": [
            {"type": "image", "image": outlines.inputs.Image(_with_format(img, self.max_side))},
            {"type": "text", "text": grading.fill_template(self.template, prompt, img)}]}])
            for prompt, img in zip(prompts, images)]
        with self._lock:
            answers = self._generate(chats)
        out = []
        for text in answers:
            if isinstance(text, Exception):
                out.append(Verdict(error=f"{type(text).__name__}: {text}"))
                continue
            try:
                out.append(Verdict(scores=grading.parse_grades(text).to_scores()))
            except grading.AnswerError as e:
                out.append(Verdict(error=f"{e} (max_new_tokens={self.max_new_tokens})"))
        return out

    def _generate(self, chats) -> list:
        try:
            return self._generator.batch(chats, max_new_tokens=self.max_new_tokens, do_sample=False)
        except ValueError as e:  # a guide that reaches a dead state fails the whole batch
            log.info("batched structured generation failed (%s); generating one image at a time", e)
            return [self._one(chat) for chat in chats]

    def _one(self, chat):
        try:
            return self._generator(chat, max_new_tokens=self.max_new_tokens, do_sample=False)
        except ValueError as e:
            return e


def check_4bit(load_in_4bit: bool) -> None:
    """verifier.load_in_4bit=true needs bitsandbytes and a CUDA GPU (NF4); a clear error otherwise."""
    if not load_in_4bit:
        return
    import torch

    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ImportError(f"verifier.load_in_4bit=true needs bitsandbytes: {install_hint('quant')}") from None
    if not torch.cuda.is_available():
        raise ValueError("verifier.load_in_4bit=true needs a CUDA GPU (bitsandbytes NF4)")


def load_qwen(model_name: str, device: str, dtype: str, load_in_4bit: bool = False,
              attn_implementation: str | None = None):
    """(model in eval mode on its device, image-only processor) of a Qwen2.5-VL checkpoint (hub id or folder);
    ``dtype`` auto: bf16 on CUDA, fp32 elsewhere; ``load_in_4bit``: NF4 through bitsandbytes (CUDA)."""
    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev, on_cuda="bf16")
    kwargs = {"dtype": torch_dtype}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if load_in_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                           bnb_4bit_compute_dtype=torch_dtype)
        kwargs["device_map"] = {"": dev.index or 0}
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_name, **kwargs).eval()
    if not load_in_4bit:
        model = model.to(dev)
    tokenizer = AutoTokenizer.from_pretrained(model_name)
    return model, image_only_processor(_image_processor(model_name), tokenizer)


def _with_format(image, max_side: int):
    """Downscaled and round-tripped through PNG bytes: outlines needs a PIL image that knows its format."""
    import io

    from PIL import Image

    data, _ = grading.encode_image(image, max_side, "png")
    return Image.open(io.BytesIO(data))


def _image_processor(model_name: str):
    try:
        from transformers import Qwen2VLImageProcessorPil as cls
    except ImportError:  # older transformers: the slow processor is PIL-based
        from transformers import Qwen2VLImageProcessor as cls
    return cls.from_pretrained(model_name)


def image_only_processor(image_processor, tokenizer):
    """Qwen2_5_VLProcessor without a video processor (the stock one insists on it, and it needs torchvision)."""
    from transformers import Qwen2_5_VLProcessor

    class ImageOnlyQwenProcessor(Qwen2_5_VLProcessor):
        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            super().__init__(image_processor=image_processor, tokenizer=tokenizer, video_processor=None,
                             chat_template=chat_template, **kwargs)

    return ImageOnlyQwenProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                  chat_template=tokenizer.chat_template or _processor_chat_template(tokenizer))


def _processor_chat_template(tokenizer) -> str:
    """The checkpoint's processor-level chat template (chat_template.jinja or chat_template.json)."""
    import json

    from transformers.utils import cached_file

    name = tokenizer.name_or_path
    for filename in ("chat_template.jinja", "chat_template.json"):
        path = cached_file(name, filename, _raise_exceptions_for_missing_entries=False)
        if path:
            text = open(path).read()
            return json.loads(text)["chat_template"] if filename.endswith(".json") else text
    raise ValueError(f"{name} has no chat template (tokenizer_config.json, chat_template.jinja or .json)")
