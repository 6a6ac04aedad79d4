"""What a new user meets in the first hour: key typos and tt-scale-flux habits caught before Hydra,
refused runs leaving nothing, reruns that say which key differs (and extend a search with more rounds),
summaries grouped by declared tags, stratified bench subsets, quick --help and one-line errors."""
import collections
import json
import subprocess
import sys
import time

import pytest
from conftest import PARTI, compose, needs_shared, run_tts

from tts.core import runfolder as rf
from tts.app.build import build_job
from tts.app.errors import ConfigError
from tts.app.overrides import check_overrides

CLI = [sys.executable, "-c", "from tts.app.cli import main; main()"]
FAST = ["pipeline.num_inference_steps=2", "batch_size=2"]


@pytest.mark.parametrize("argv,says", [
    (["verifer=shapes"], "did you mean 'verifier'"),
    (["search.round=3"], "did you mean 'search.rounds'"),
    (["search=zero-order", "search.neighbors=3"], "did you mean 'search.num_neighbors'"),
    (["pipeline.num_steps=3"], "pipeline.num_steps"),
    (["search_rounds=3"], "search.rounds"),
    (["batch_size_for_img_gen=2"], "batch_size"),
    (["use_low_gpu_vram=true"], "pipeline.cpu_offload"),
    (["num_prompts=None"], "num_prompts=all"),
    (["--prompt=a red circle"], "prompt="),
    (["search.search_rounds=3"], "search.rounds"),
])
def test_unknown_keys_and_tt_scale_flux_habits_get_the_tts_key(argv, says):
    with pytest.raises(ConfigError) as e:
        check_overrides(argv)
    assert says in str(e.value)
    assert "+verifer" not in str(e.value)  # never Hydra's "To append to your config use +..." advice


def test_known_keys_additions_removals_and_hydra_flags_pass():
    check_overrides(["search.rounds=3", "+verifier.extra=1", "~verifier.choice_of_metric", "-m", "--cfg", "job",
                     "hydra.run.dir=x", "pipeline=sdxl", "pipeline.height=512", "prompt=a", "num_prompts=all"])


def test_settings_a_component_takes_but_its_yaml_omits_need_no_plus():
    argv = ["pipeline=flux-dev", "pipeline.cpu_offload=true", "pipeline.call_args.negative_prompt=x", "search.rounds=2"]
    assert check_overrides(argv) == ["pipeline=flux-dev", "++pipeline.cpu_offload=true",
                                     "++pipeline.call_args.negative_prompt=x", "search.rounds=2"]
    with pytest.raises(ConfigError, match="did you mean 'pipeline.cpu_offload'"):
        check_overrides(["pipeline.cpu_ofload=true"])


def test_a_refused_run_leaves_no_folder(tmp_path):
    start = time.monotonic()
    out = subprocess.run([*CLI, "search.rounds=0", f"output_root={tmp_path}"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2 and "search.rounds must be a positive integer" in out.stdout + out.stderr
    assert list(tmp_path.rglob("*")) == [] and time.monotonic() - start < 60


def test_custom_verifier_needs_its_target(tmp_path):
    with pytest.raises(ConfigError, match=r"verifier._target_=my_module.MyVerifier"):
        build_job(compose(["verifier=custom"]), tmp_path)
    job = build_job(compose(["verifier=custom", "verifier._target_=verifiers.example_custom.Sharpness"]), tmp_path)
    assert job.verifier.name


@pytest.mark.slow
def test_a_rerun_names_the_key_that_differs_and_more_rounds_extend_the_search(tmp_path):
    run_tts([*FAST, "search.rounds=2"], tmp_path)
    with pytest.raises(rf.RunFolderMismatch, match=r"search.base \(search.base: 2 -> 3\)"):
        run_tts([*FAST, "search.rounds=2", "search.base=3"], tmp_path)
    summary = run_tts([*FAST, "search.rounds=3"], tmp_path)  # random search: more rounds extend it
    assert summary["candidates"] == 2 + 4 + 8
    assert json.loads((tmp_path / rf.CONFIG).read_text())["search"]["rounds"] == 3
    assert sorted(collections.Counter(r.round for r in rf.read_manifest(tmp_path)).items()) == [(1, 2), (2, 4), (3, 8)]


@needs_shared
def test_summary_groups_by_declared_tag_columns_only(tmp_path):
    job = build_job(compose(["verifier=compressibility", "prompts=file", f"prompts.path={PARTI}",
                             "prompts.column=Prompt", "num_prompts=3"]), tmp_path)
    assert "Note" in job.prompts[0].tags or PARTI.read_text().splitlines()[0].count("Note") == 0
    assert "Note" not in job.group_by and {"Category", "Challenge"} <= set(job.group_by)
    job = build_job(compose(["verifier=compressibility", "prompts=file", f"prompts.path={PARTI}",
                             "prompts.column=Prompt", "num_prompts=3", "prompts.tags=[Challenge]"]), tmp_path)
    assert job.group_by == ("Challenge",)


def test_a_bench_subset_is_stratified_and_seeded(tmp_path):
    five = build_job(compose(["prompts=shapes-bench", "num_prompts=5"]), tmp_path).prompts
    assert len({p.tags["category"] for p in five}) == 5
    again = build_job(compose(["prompts=shapes-bench", "num_prompts=5"]), tmp_path).prompts
    other = build_job(compose(["prompts=shapes-bench", "num_prompts=5", "prompts.subset_seed=1"]), tmp_path).prompts
    assert [p.text for p in five] == [p.text for p in again] != [p.text for p in other]
    fifty = build_job(compose(["prompts=shapes-bench", "num_prompts=50"]), tmp_path).prompts
    counts = collections.Counter(p.tags["category"] for p in fifty)
    assert len(fifty) == 50 == len({p.text for p in fifty}) and max(counts.values()) - min(counts.values()) <= 1


def test_help_is_quick_and_imports_no_torch():
    code = "import sys; sys.argv = ['tts-search', '--help']\nfrom tts.app.cli import main\ntry: main()\nexcept SystemExit: pass\n" \
           "print('torch' in sys.modules)"
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().endswith("False") and "Configuration groups" in out.stdout
    assert time.monotonic() - start < 30


def test_replay_of_a_missing_folder_is_one_line(tmp_path):
    out = subprocess.run([sys.executable, "-c", "from tts.app.replay import main; main()", str(tmp_path / "nope"),
                          "x.png"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_out_of_grammar_prompt_says_what_to_do_instead(tmp_path):
    with pytest.raises(Exception, match="choose a general verifier"):
        build_job(compose(["prompt=a cat on a sofa"]), tmp_path)
