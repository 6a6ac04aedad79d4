"""tts.run.lockstep: prompts mixed in pipeline calls give each prompt the candidates its own search would."""
from functools import partial

from tts.sampling.generate import make_generator
from tts.run.lockstep import LockstepStudy, search_lockstep
from tts.search.protocols import make_strategy
from tts.pipelines import PipelineSpec
from tts.core.runfolder import prompt_hash
from tts.search.random import RandomSearch
from tts.search.zero_order import ZeroOrderSearch
from tts.verifiers.shapes import ShapesVerifier

PROMPTS = ["a red circle", "two blue squares", "a green triangle above a yellow circle"]


def _score(prompt, images):
    return [{m: s.score for m, s in v.items()} for v in ShapesVerifier().score([prompt] * len(images), images)]


def _generator():
    return make_generator(PipelineSpec(name="shapes", model_id="tts://shapes-model", height=32, width=32,
                                       num_inference_steps=2, guidance_scale=1.0))


def test_mixed_prompts_give_each_prompt_its_own_search():
    gen = _generator()
    zero_order = partial(ZeroOrderSearch, rounds=100, num_neighbors=3, threshold=0.95)
    together, nfe = search_lockstep(gen, LockstepStudy(PROMPTS, zero_order, _score, "criteria_met", seed=3), 7, 5)
    alone = [search_lockstep(gen, LockstepStudy([p], zero_order, _score, "criteria_met", seed=3), 7, 2)[0][0]
             for p in PROMPTS]
    assert nfe == 2.0 and [len(p) for p in together] == [7, 7, 7]
    assert together == alone


def test_random_pools_are_the_noises_tts_search_asks_for():
    random = partial(RandomSearch, rounds=1, schedule="constant", per_round=4)
    pools, _ = search_lockstep(_generator(), LockstepStudy(PROMPTS[:1], random, _score, "criteria_met", seed=3), 4, 8)
    phash = prompt_hash(PROMPTS[0])
    asked = make_strategy(random, 3, phash).ask()
    assert [c["noise"] for c in pools[0]] == asked and all(set(c) >= {"correct", "criteria_met"} for c in pools[0])
