"""The model manager: LRU unloading under a count and a memory budget, pins, out-of-memory recovery, preloading,
embeddings kept per loaded pipeline, and a sweep over two pipelines in one process keeping one loaded."""
import numpy as np
import pytest
import torch
from conftest import run_tts
from twins import save_twin

from tts.pipelines import models as models_module
from tts.sampling.generate import Generator, make_generator
from tts.pipelines.models import ModelManager, ModelMemoryError, checkpoint_bytes, configure, manager, preset_spec, weight_bytes
from tts.core.noise import fresh
from tts.pipelines import PipelineConfigError, PipelineSpec, resolve_model_path


def sd15(twins_root, **kw) -> PipelineSpec:
    return PipelineSpec(name="sd15", model_id=str(save_twin("sd15", twins_root)), height=32, width=32,
                        num_inference_steps=2, guidance_scale=5.0, device="cpu", **kw)


def shapes(**kw) -> PipelineSpec:
    return preset_spec("shapes", device="cpu", num_inference_steps=2, **kw)


@pytest.fixture
def default_manager():
    """The process's manager, its limits restored afterwards (other tests share its loaded pipelines)."""
    mgr = manager()
    saved = (mgr.max_resident, mgr.max_memory_gb)
    yield mgr
    mgr.configure(*saved)


def test_least_recently_used_pipeline_is_unloaded(twins_root):
    mgr = ModelManager(max_resident=2)
    a, b, c = shapes(), sd15(twins_root), sd15(twins_root, dtype="bf16")
    mgr.load(a)
    mgr.load(b)
    mgr.load(a)  # a is now the most recently used
    mgr.load(c)
    assert mgr.names() == ["shapes", "sd15"] and mgr.is_loaded(a) and mgr.is_loaded(c) and not mgr.is_loaded(b)
    assert mgr.load(a) is mgr.load(a)  # resident: the same object, not loaded again
    mgr.configure(max_resident=1)  # lowering the count unloads at once
    assert [r.key for r in mgr.resident()] == [a.load_key]


def test_a_pipeline_in_use_is_never_unloaded(twins_root):
    mgr = ModelManager(max_resident=1)
    a, b = shapes(), sd15(twins_root)
    with mgr.use(a) as loaded:
        mgr.load(b)
        assert mgr.is_loaded(a) and mgr.is_loaded(b)  # over the count while a generates
        with pytest.raises(PipelineConfigError, match="generating"):
            mgr.unload(a)
        assert loaded.pipe is mgr.resident_map[a.load_key].loaded.pipe
    mgr.load(b)  # a is idle now: the next use makes room
    assert mgr.names() == ["sd15"]


def test_memory_budget_unloads_before_loading(twins_root):
    a, b = shapes(), sd15(twins_root)
    sizes = {}
    for spec in (a, b):
        loaded = ModelManager().load(spec)
        sizes[spec.name] = weight_bytes(loaded.pipe)
        # the estimate read from the checkpoint's safetensors headers is the loaded weights' size
        assert checkpoint_bytes(resolve_model_path(spec.model_id), "fp32") == pytest.approx(sizes[spec.name], rel=0.05)
    assert checkpoint_bytes(resolve_model_path(b.model_id), "fp16") == pytest.approx(sizes["sd15"] / 2, rel=0.05)
    budget_gb = (max(sizes.values()) + min(sizes.values()) / 2) / 1e9  # one fits, both do not
    mgr = ModelManager(max_resident=4, max_memory_gb=budget_gb)
    mgr.load(a)
    mgr.load(b)
    assert mgr.names() == ["sd15"]
    mgr.load(a)
    assert mgr.names() == ["shapes"]
    roomy = ModelManager(max_resident=4, max_memory_gb=sum(sizes.values()) * 1.1 / 1e9)
    roomy.load(a)
    roomy.load(b)
    assert roomy.names() == ["shapes", "sd15"]


def _oom_hook(times: list):
    """A denoiser pre-hook that raises CUDA's out-of-memory error while ``times`` is not empty."""
    def hook(module, args, kwargs):
        if times:
            times.pop()
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    return hook


def test_out_of_memory_while_generating_unloads_the_others_and_retries_once(twins_root):
    mgr = ModelManager(max_resident=2)
    other, spec = sd15(twins_root), shapes()
    mgr.load(other)
    gen = Generator(mgr.load(spec), spec, mgr)
    reference, _, _ = gen.generate("a red circle", [fresh(1)])
    failures = [1]
    hook = gen.loaded.denoiser.register_forward_pre_hook(_oom_hook(failures), with_kwargs=True)
    try:
        images, nfe, _ = gen.generate("a red circle", [fresh(1)])
        assert not failures and nfe == 2
        assert np.array_equal(np.asarray(images[0]), np.asarray(reference[0]))
        assert mgr.names() == ["shapes"]  # the other pipeline made room
        mgr.load(other)
        failures[:] = [1, 1]
        with pytest.raises(ModelMemoryError) as e:
            gen.generate("a red circle", [fresh(1)])
    finally:
        hook.remove()
        gen.close()
    message = str(e.value)
    assert "\n" not in message and "after unloading 1 other pipeline" in message
    for option in ("models.max_resident", "models.max_memory_gb", "batch_size", "pipeline.cpu_offload=true"):
        assert option in message


def test_out_of_memory_while_loading_unloads_the_others_and_retries(twins_root, monkeypatch):
    mgr = ModelManager(max_resident=2)
    mgr.load(shapes())
    real, failures = PipelineSpec._load, [1]

    def load_failing_once(self, source):
        if failures:
            failures.pop()
            raise torch.OutOfMemoryError("CUDA out of memory")
        return real(self, source)

    monkeypatch.setattr(PipelineSpec, "_load", load_failing_once)
    mgr.load(sd15(twins_root))
    assert mgr.names() == ["sd15"]
    failures[:] = [1, 1]
    with pytest.raises(ModelMemoryError, match="out of memory on cpu loading sd15"):
        mgr.load(sd15(twins_root, dtype="bf16"))


def test_preload_and_its_checks(default_manager):
    mgr = configure({"max_resident": 2, "preload": ["shapes"]})
    assert mgr is default_manager and "shapes" in mgr.names()
    with pytest.raises(PipelineConfigError, match="raise models.max_resident to 3"):
        configure({"max_resident": 2, "preload": ["shapes", "sd15", "sdxl"]})
    with pytest.raises(PipelineConfigError, match="unknown pipeline 'shapez'; did you mean 'shapes'"):
        configure({"max_resident": 2, "preload": ["shapez"]})
    with pytest.raises(PipelineConfigError, match="models.max_resident must be a positive integer"):
        configure({"max_resident": 0})
    with pytest.raises(PipelineConfigError, match="unknown key models.preloads"):
        configure({"preloads": ["shapes"]})


def test_interleaved_prompts_are_encoded_once_each(twins_root):
    spec = sd15(twins_root)
    gen = make_generator(spec, ModelManager())
    calls = []
    hook = gen.pipe.text_encoder.register_forward_pre_hook(lambda m, a: calls.append(1))
    try:
        for prompt in ("a red cube", "a blue sphere", "a red cube", "a blue sphere"):
            gen.generate(prompt, [fresh(1)])
        gen.generate(["a red cube", "a blue sphere"], [fresh(2), fresh(3)])
    finally:
        hook.remove()
        gen.close()
    assert len(calls) == 2 * 2  # each prompt once, with its negative (classifier-free guidance)


@pytest.mark.slow
def test_a_sweep_over_two_pipelines_keeps_one_loaded(twins_root, tmp_path, default_manager):
    """A multirun runs its jobs in one process: with models.max_resident=1 the previous pipeline is unloaded."""
    default_manager.configure(max_resident=1)
    path = save_twin("sd15", twins_root)
    run_tts(["pipeline.num_inference_steps=2", "search.rounds=1", "verifier=compressibility"], tmp_path / "a")
    assert default_manager.names() == ["shapes"]
    run_tts(["pipeline=sd15", f"pipeline.model_id={path}", "pipeline.device=cpu", "pipeline.height=32",
             "pipeline.width=32", "pipeline.num_inference_steps=2", "search.rounds=1", "verifier=compressibility"],
            tmp_path / "b")
    assert default_manager.names() == ["sd15"]
    assert models_module.manager() is default_manager
