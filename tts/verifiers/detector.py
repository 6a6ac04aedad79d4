"""A GenEval-style checker for real images (Ghosh et al. 2023): the prompt (a GenEval template, parsed by
:mod:`geneval_rules`) is checked against an open-vocabulary detector's boxes: counts, colours and relative
positions, each failed requirement named in the explanation, as the shapes checker does. ``correct`` is 1 when
every requirement holds (GenEval's score); ``criteria_met`` is the fraction that hold (denser, for search).

Detection: OWLv2 (Minderer et al. 2023) through transformers, queried with the prompt's object names; boxes
above ``threshold`` (``counting_threshold`` for the objects of a counting prompt, as GenEval raises its threshold
for counting), non-maximum suppression per name at ``nms_iou``, at most ``max_objects`` per name. Colour:
GenEval's zero-shot CLIP classification of each box's crop over its ten colours, with its three templates
("a photo of a {c} {object}", "a photo of a {c}-colored {object}", "a photo of a {c} object"; the template
embeddings averaged). Unlike GenEval, which detects COCO's 80 classes with Mask2Former and greys out the
background of each crop with the mask, the detector takes any object name and the crop is the box.
The thresholds are OWLv2's, not calibrated against GenEval's human study.
"""
from __future__ import annotations

import torch

from ..core.records import MetricScore
from ..core.torchutil import check_dtype, resolve_device, resolve_dtype
from ..core.validate import install_hint
from . import _clip, geneval_rules
from .base import Verifier, VerifierError

COLOUR_TEMPLATES = ("a photo of a {c} {noun}", "a photo of a {c}-colored {noun}", "a photo of a {c} object")


class DetectorVerifier(Verifier):
    name = "detector"
    metrics = ("criteria_met", "correct")

    def __init__(self, detector_name: str = "google/owlv2-base-patch16-ensemble",
                 clip_name: str = "openai/clip-vit-large-patch14", threshold: float = 0.3,
                 counting_threshold: float = 0.4, nms_iou: float = 0.5, max_objects: int = 16,
                 choice_of_metric: str | None = "criteria_met", device: str = "auto", dtype: str = "auto"):
        super().__init__(choice_of_metric)
        for key, value in (("threshold", threshold), ("counting_threshold", counting_threshold), ("nms_iou", nms_iou)):
            if not 0.0 < float(value) <= 1.0:
                raise VerifierError(f"verifier.{key} must lie in (0, 1], got {value!r}")
        if not isinstance(max_objects, int) or max_objects < 1:
            raise VerifierError(f"verifier.max_objects must be a positive integer, got {max_objects!r}")
        check_dtype("verifier.dtype", dtype, allow_auto=True)
        self.detector_name, self.clip_name, self.threshold = detector_name, clip_name, threshold
        self.counting_threshold, self.nms_iou, self.max_objects = counting_threshold, nms_iou, max_objects
        self.device, self.dtype = device, dtype
        self._detector = None

    def check(self) -> None:
        try:
            import scipy  # noqa: F401  (OWLv2's PIL image processor resizes with scipy.ndimage)
        except ImportError:
            raise ImportError(f"verifier=detector needs scipy: {install_hint('detector')}") from None

    def check_prompt(self, prompt: str) -> None:
        geneval_rules.parse(prompt)

    def setup(self) -> None:
        from transformers import AutoTokenizer, Owlv2ForObjectDetection, Owlv2ImageProcessorPil, Owlv2Processor

        self._dev = resolve_device(self.device)
        self._dtype = resolve_dtype(self.dtype, self._dev)
        self._detector = Owlv2ForObjectDetection.from_pretrained(self.detector_name, dtype=self._dtype).to(self._dev).eval()
        self._processor = Owlv2Processor(image_processor=Owlv2ImageProcessorPil.from_pretrained(self.detector_name),
                                         tokenizer=AutoTokenizer.from_pretrained(self.detector_name))
        self._clip = _clip.load(self.clip_name, None, self.device, self.dtype)

    def score(self, prompts, images):
        out = []
        for prompt, image in zip(prompts, images):
            spec = geneval_rules.parse(prompt)
            verdict = geneval_rules.check(spec, self.detect(spec, image.convert("RGB")))
            why = verdict.explanation()
            out.append({"criteria_met": MetricScore(score=verdict.criteria_met, explanation=why),
                        "correct": MetricScore(score=verdict.correct, explanation=why)})
        return out

    @torch.no_grad()
    def detect(self, spec: geneval_rules.Spec, image) -> list[geneval_rules.Detection]:
        """The prompt's objects found in the image (boxes in pixels), colours classified where the prompt asks."""
        nouns = spec.nouns
        inputs = self._processor(text=[nouns], images=[image], return_tensors="pt").to(self._dev)
        inputs["pixel_values"] = inputs["pixel_values"].to(self._dtype)
        outputs = self._detector(**inputs)
        floor = min(self.threshold, self.counting_threshold)
        [found] = self._processor.image_processor.post_process_object_detection(
            outputs, threshold=floor, target_sizes=[(image.height, image.width)])
        counting = {r.noun for r in spec.include if r.count > 1}
        detections = []
        for i, noun in enumerate(nouns):
            keep = (found["labels"] == i) & (found["scores"] >= (self.counting_threshold if noun in counting
                                                                 else self.threshold))
            scores, boxes = found["scores"][keep].float().cpu(), found["boxes"][keep].float().cpu()
            for j in nms(boxes, scores, self.nms_iou)[: self.max_objects]:
                x0, y0, x1, y1 = boxes[j].tolist()  # OWLv2 pads to a square: boxes may reach past the image
                box = (min(max(x0, 0.0), image.width), min(max(y0, 0.0), image.height),
                       min(max(x1, 0.0), image.width), min(max(y1, 0.0), image.height))
                detections.append(geneval_rules.Detection(noun=noun, score=float(scores[j]), box=box))
        for noun in {r.noun for r in spec.include if r.colour}:
            mine = [d for d in detections if d.noun == noun]
            for d, colour in zip(mine, self.colours(image, noun, [d.box for d in mine])):
                d.colour = colour
        return detections

    def colours(self, image, noun: str, boxes) -> list[str]:
        """GenEval's colour of each box's crop: CLIP zero-shot over its ten colours (templates averaged)."""
        if not boxes:
            return []
        model, tok, proc, dev, dtype = self._clip
        crops = [image.crop(tuple(int(round(v)) for v in box)) if box[2] - box[0] >= 1 and box[3] - box[1] >= 1
                 else image for box in boxes]
        img = _clip.embed_images(model, proc, crops, dev, dtype)
        texts = [t.format(c=c, noun=noun) for c in geneval_rules.COLOURS for t in COLOUR_TEMPLATES]
        txt = _clip.embed_texts(model, tok, texts, dev).view(len(geneval_rules.COLOURS), len(COLOUR_TEMPLATES), -1)
        classes = torch.nn.functional.normalize(txt.mean(1), dim=-1)
        return [geneval_rules.COLOURS[i] for i in (img @ classes.T).argmax(-1).tolist()]


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou: float) -> list[int]:
    """Indices kept by greedy non-maximum suppression, best score first."""
    order, keep = scores.argsort(descending=True).tolist(), []
    for i in order:
        if all(_iou(boxes[i], boxes[k]) <= iou for k in keep):
            keep.append(i)
    return keep


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    w = max(0.0, float(torch.minimum(a[2], b[2]) - torch.maximum(a[0], b[0])))
    h = max(0.0, float(torch.minimum(a[3], b[3]) - torch.maximum(a[1], b[1])))
    inter = w * h
    area = float((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])) - inter
    return inter / area if area > 0 else 0.0
