"""Blocked candidates (tts.run.safety): black-image detection, a safety checker that flags, the prompt rewriter (a tiny
instruct LLM through transformers' real loading path), the fallback pipeline, and a search that records them."""
import numpy as np
import pytest
from PIL import Image
from twins_extra import save_flagging_sd15, save_instruct_llm

from tts.run.safety import (Rewriter, Safety, SafetyConfigError, clean_rewrite, from_config, is_black, is_flagged,
                        mark_flagged)


def _image(value=0, size=16, spots=()):
    a = np.full((size, size, 3), value, dtype=np.uint8)
    for (y, x), v in spots:
        a[y, x] = v
    return Image.fromarray(a)


# -- detection ---------------------------------------------------------------------------------------------

def test_black_threshold_on_crafted_images():
    assert is_black(_image(0))  # what a safety checker returns
    assert is_black(_image(4))  # mean 4 (the default bound) is still black
    assert not is_black(_image(5))  # a uniform dark grey above the mean bound is not
    assert is_black(_image(1, spots=[((0, 0), 32)]))  # a dim pixel at the max bound
    assert not is_black(_image(1, spots=[((0, 0), 33)]))  # one brighter pixel: a dark scene, not a black image
    assert not is_black(_image(0, spots=[((3, 3), 255)]))  # a star in the night sky
    assert is_black(_image(10), black_mean=10, black_max=10)  # the thresholds are settings
    assert is_black(Image.new("L", (8, 8), 0)) and not is_black(Image.new("RGB", (8, 8), (0, 0, 200)))


def test_flags_ride_in_the_image_info():
    images = mark_flagged([_image(0), _image(200)], [True, False])
    assert [is_flagged(i) for i in images] == [True, False]
    assert not is_flagged(mark_flagged([_image(0)], None)[0])  # a pipeline without a checker flags nothing


@pytest.mark.slow
def test_a_flagging_safety_checker_is_recorded_through_the_generator(twins_root):
    from tts.sampling.generate import Generator
    from tts.core.noise import fresh
    from tts.pipelines import PipelineSpec

    spec = PipelineSpec(name="sd15", model_id=str(save_flagging_sd15(twins_root)), height=32, width=32,
                        num_inference_steps=2, guidance_scale=5.0, device="cpu")
    gen = Generator(spec.load(), spec)
    try:
        [shot] = Safety().generate(gen, "a red cube", [fresh(1)], "sd15")
    finally:
        gen.close()
    assert shot.safety.nsfw and shot.safety.black and shot.blocked == "nsfw, black"
    assert np.asarray(shot.image).max() == 0 and shot.nfe == 4


@pytest.mark.slow
def test_safety_checker_off_loads_without_it(twins_root):
    from twins import save_twin

    from tts.sampling.generate import Generator
    from tts.core.noise import fresh
    from tts.pipelines import PipelineSpec

    common = dict(name="sd15", height=32, width=32, num_inference_steps=2, guidance_scale=5.0, device="cpu")
    flagging = str(save_flagging_sd15(twins_root))
    keep, off = (PipelineSpec(model_id=flagging, safety_checker=s, **common) for s in ("keep", "off"))
    assert keep.load_key != off.load_key  # two different pipelines, never shared
    gen = Generator(off.load(), off)
    try:
        assert gen.pipe.safety_checker is None
        [shot] = Safety().generate(gen, "a red cube", [fresh(1)], "sd15")
    finally:
        gen.close()
    assert shot.blocked is None and np.asarray(shot.image).max() > 0
    for checker in ("keep", "off"):  # a checkpoint without a checker loads either way
        spec = PipelineSpec(model_id=str(save_twin("sd15", twins_root)), safety_checker=checker, **common)
        assert spec.load().pipe.safety_checker is None
    with pytest.raises(ValueError, match="safety_checker must be keep or off"):
        PipelineSpec(model_id=flagging, safety_checker="none", **common)


# -- the rewriter ----------------------------------------------------------------------------------------

def test_clean_rewrite_keeps_the_first_line_unquoted():
    assert clean_rewrite('\n  "a red flame on a candle"\nI replaced naked.') == "a red flame on a candle"
    assert clean_rewrite("Rewritten prompt: a kitten") == "a kitten"
    assert clean_rewrite("  \n\x07\n") == ""


def test_the_rewriter_loads_a_tiny_instruct_llm_and_is_deterministic(twins_root, tmp_path):
    template = tmp_path / "t.txt"
    template.write_text("Make this safe: {prompt}")
    rewriter = Rewriter(model_id=str(save_instruct_llm(twins_root)), template=str(template), max_new_tokens=8)
    rewriter.check()
    first = rewriter.rewrite("a naked flame")
    assert first and first == rewriter.rewrite("a naked flame")  # greedy: the same rewrite every time
    assert "\n" not in first and first != "a naked flame"
    tok = rewriter._tokenizer  # the template reached the model through the chat template
    ids = tok.apply_chat_template([{"role": "user", "content": "Make this safe: a naked flame"}],
                                  add_generation_prompt=True)
    assert "<|im_start|>assistant" in tok.decode(ids["input_ids"] if isinstance(ids, dict) else ids)


def test_rewrite_template_needs_the_prompt_slot(tmp_path):
    template = tmp_path / "t.txt"
    template.write_text("no slot here")
    with pytest.raises(SafetyConfigError, match=r"\{prompt\}"):
        Rewriter(template=str(template)).check()
    with pytest.raises(SafetyConfigError, match="does not exist"):
        Rewriter(template=str(tmp_path / "missing.txt")).check()
    Rewriter().check()  # the shipped verifiers/rewrite_prompt.txt


# -- the flow --------------------------------------------------------------------------------------------

class FakeGenerator:
    """Black images for prompts containing a blocked word, grey ones otherwise; counts its calls."""

    def __init__(self, blocked_words=("naked",), nfe=10.0, value=120):
        self.blocked_words, self.nfe, self.value, self.calls = blocked_words, nfe, value, []

    def generate(self, prompt, lineages):
        self.calls.append((prompt, len(lineages)))
        bad = any(w in prompt for w in self.blocked_words)
        images = [_image(0 if bad and n["seed"] % 2 == 0 else self.value) for n in lineages]
        return mark_flagged(images, [bad and n["seed"] % 2 == 0 for n in lineages]), self.nfe, 1.0 * len(lineages)

    def close(self):
        pass


class FakeRewriter(Rewriter):
    def check(self):
        pass

    def rewrite(self, prompt):
        return prompt.replace("naked", "bare")


def _lineages(n):
    return [{"kind": "fresh", "seed": s} for s in range(n)]


def test_blocked_candidates_are_regenerated_from_the_rewritten_prompt():
    gen = FakeGenerator()
    safety = Safety(rewrite=True, rewrite_share=0.5, rewriter=FakeRewriter())
    shots = safety.generate(gen, "a naked flame", _lineages(4), "sd15")
    assert gen.calls == [("a naked flame", 4), ("a bare flame", 2)]  # only the two blocked ones again
    assert [s.blocked for s in shots] == [None] * 4
    redone = [s for s in shots if s.safety.attempts]
    assert len(redone) == 2 and all(s.safety.rewritten_prompt == "a bare flame" for s in redone)
    assert all(s.safety.attempts[0].nsfw and s.safety.attempts[0].black for s in redone)
    assert all(s.nfe == 20.0 and s.seconds == 2.0 for s in redone)  # both generations are counted
    assert all(s.nfe == 10.0 and s.safety.rewritten_prompt is None for s in shots if not s.safety.attempts)


def test_rewrite_waits_for_its_share_of_blocked_candidates():
    gen = FakeGenerator()
    safety = Safety(rewrite=True, rewrite_share=0.75, rewriter=FakeRewriter())
    shots = safety.generate(gen, "a naked flame", _lineages(4), "sd15")  # 2 of 4 blocked: below 0.75
    assert len(gen.calls) == 1 and [s.blocked for s in shots] == ["nsfw, black", None, "nsfw, black", None]
    # blocked share over the prompt's candidates so far: 4 of 6 after this batch of two blocked ones
    shots = safety.generate(gen, "a naked flame", [{"kind": "fresh", "seed": s} for s in (4, 6)], "sd15")
    assert len(gen.calls) == 2 and all(s.blocked for s in shots)
    shots = safety.generate(gen, "a naked flame", [{"kind": "fresh", "seed": s} for s in (8, 10)], "sd15")
    assert gen.calls[-1] == ("a bare flame", 2) and not any(s.blocked for s in shots)  # 6 of 8 >= 0.75


def test_the_fallback_pipeline_regenerates_what_is_still_blocked(monkeypatch):
    gen, fallback = FakeGenerator(blocked_words=("flame",)), FakeGenerator(blocked_words=(), nfe=4.0, value=90)
    safety = Safety(rewrite=True, rewrite_share=0.0, rewriter=FakeRewriter(), fallback_pipeline="sdxl")
    monkeypatch.setattr(safety, "_fallback_generator", lambda: fallback)
    shots = safety.generate(gen, "a naked flame", _lineages(2), "sd15")
    assert gen.calls == [("a naked flame", 2), ("a bare flame", 1)]
    assert fallback.calls == [("a bare flame", 1)]  # the rewritten prompt, for the one still blocked
    first, second = shots
    assert first.safety.pipeline == "sdxl" and first.blocked is None and first.nfe == 24.0
    assert [(a.pipeline, a.rewritten_prompt) for a in first.safety.attempts] == [("sd15", None),
                                                                                ("sd15", "a bare flame")]
    assert second.safety.pipeline == "sd15" and not second.safety.attempts


def test_screen_off_blocks_nothing():
    shots = Safety(screen=False).generate(FakeGenerator(), "a naked flame", _lineages(2), "sd15")
    assert [s.blocked for s in shots] == [None, None]


# -- configuration -----------------------------------------------------------------------------------------

def _spec():
    from tts.pipelines import PipelineSpec

    return PipelineSpec(name="shapes", model_id="tts://shapes-model", height=32, width=32, num_inference_steps=2,
                        guidance_scale=1.0, device="cpu")


def test_safety_settings_are_validated_up_front():
    with pytest.raises(SafetyConfigError, match=r"unknown pipeline 'sdxxl'.*did you mean 'sdxl'.*choices: .*sd15"):
        from_config({"fallback_pipeline": "sdxxl"}, _spec())
    with pytest.raises(SafetyConfigError, match="search's own pipeline"):
        from_config({"fallback_pipeline": "shapes"}, _spec())
    with pytest.raises(SafetyConfigError, match=r"unknown key safety.rewrite_shares"):
        from_config({"rewrite_shares": 0.5}, _spec())
    with pytest.raises(SafetyConfigError, match=r"unknown key safety.rewriter.model"):
        from_config({"rewriter": {"model": "x"}}, _spec())
    with pytest.raises(SafetyConfigError, match=r"rewrite_share must be in \[0, 1\]"):
        from_config({"rewrite_share": 2}, _spec())
    with pytest.raises(SafetyConfigError, match="black_max"):
        from_config({"black_max": 300}, _spec())
    with pytest.raises(SafetyConfigError, match="keep safety.screen=true"):
        from_config({"screen": False, "rewrite": True}, _spec())
    safety = from_config(None, _spec())
    assert safety.screen and not safety.regenerates
    assert from_config({"rewrite": True}, _spec()).regenerates


# -- a search ---------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_search_records_blocked_candidates_then_rewrites_and_falls_back(twins_root, tmp_path):
    """Every image of the flagging twin is blocked: recorded, never verified, never a best, counted; a rerun keeps
    them; a rerun with rewriting and a fallback regenerates them, and the verifier judges the original prompt."""
    import json

    from conftest import run_tts
    from twins_extra import PromptSpy

    from tts.core.runfolder import read_manifest

    prompt = "a red cube on the moon"
    base = ["pipeline=sd15", f"pipeline.model_id={save_flagging_sd15(twins_root)}", "pipeline.dtype=fp32",
            "pipeline.device=cpu", "pipeline.height=32", "pipeline.width=32", "pipeline.num_inference_steps=2",
            "verifier._target_=twins_extra.PromptSpy", "~verifier.choice_of_metric", "search.rounds=2",
            "batch_size=2", f"prompt={prompt}", f"hydra.run.dir={tmp_path}"]
    PromptSpy.prompts, PromptSpy.images = [], 0
    summary = run_tts(base, tmp_path)
    records = read_manifest(tmp_path)
    assert len(records) == 6 and all(r.status == "blocked" and r.error == "nsfw, black" for r in records)
    assert all(r.safety.nsfw and r.safety.black and r.safety.pipeline == "sd15" and r.score is None for r in records)
    assert PromptSpy.images == 0  # nothing blocked reaches the verifier
    assert summary["blocked"] == 6 and summary["blocked_per_prompt"] == {prompt: 6} and summary["prompts"] == {}
    rounds = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("prompt@*_i@*.json"))]
    assert len(rounds) == 2 and all(d["best_img_path"] is None for d in rounds)  # never a best

    run_tts(base, tmp_path)  # a rerun keeps blocked records: nothing generated, nothing verified
    assert len(read_manifest(tmp_path)) == 6 and PromptSpy.images == 0

    llm = save_instruct_llm(twins_root)
    summary = run_tts(base + ["safety.rewrite=true", f"safety.rewriter.model_id={llm}",
                              "safety.rewriter.max_new_tokens=8", "safety.fallback_pipeline=shapes"], tmp_path)
    final = {r.key: r for r in read_manifest(tmp_path) if r.status == "ok"}
    assert len(final) == 6 and PromptSpy.images == 6
    assert set(PromptSpy.prompts) == {prompt}  # judged against the original prompt
    rewritten = Rewriter(model_id=str(llm), max_new_tokens=8).rewrite(prompt)
    for r in final.values():
        assert r.prompt == prompt and r.safety.pipeline == "shapes" and r.safety.rewritten_prompt == rewritten
        assert [(a.pipeline, a.rewritten_prompt, a.nsfw) for a in r.safety.attempts] == [
            ("sd15", None, True), ("sd15", rewritten, True)]
        assert r.nfe == 4 + 4 + 10  # two guided SD attempts of 2 steps, then 10 shapes steps
        assert Image.open(tmp_path / r.image).size == (32, 32) and np.asarray(Image.open(tmp_path / r.image)).max() > 0
    assert summary["blocked"] == 0 and summary["prompts"][prompt]["best_score"] is not None


@pytest.mark.slow
def test_an_unknown_fallback_preset_is_one_line_before_anything_loads(tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", "from tts.app.cli import main; main()", "safety.fallback_pipeline=sdxxl",
                          f"hydra.run.dir={tmp_path / 'run'}"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    text = out.stdout + out.stderr  # Hydra's console log
    errors = [line for line in text.splitlines() if "sdxxl" in line]
    assert len(errors) == 1 and "did you mean 'sdxl'" in errors[0] and "choices:" in errors[0]
    assert "Traceback" not in text and not (tmp_path / "run").exists()  # a refused run leaves no folder
