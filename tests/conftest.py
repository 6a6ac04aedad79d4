import os
import shutil
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")
TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
sys.path.insert(0, str(TESTS / "plugins"))
sys.path.insert(0, str(TESTS.parent))  # the repository root, as a user's working directory
SHARED = TESTS.parents[1] / "shared"
PARTI = SHARED / "prompts" / "PartiPrompts.tsv"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
#: Tests that drive Debian's headless Chromium; .ci/run installs it and sets TTS_REQUIRE_BROWSER=1 (no silent skip).
needs_browser = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER) and not os.environ.get("TTS_REQUIRE_BROWSER"),
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver; "
           ".ci/run installs them and sets TTS_REQUIRE_BROWSER=1)")


#: Tests that read ../shared (PartiPrompts beside the checkout): skipped, saying so, where it is absent, unless
#: TTS_REQUIRE_SHARED=1 (then they fail on the missing file, as CI should).
needs_shared = pytest.mark.skipif(
    not PARTI.exists() and not os.environ.get("TTS_REQUIRE_SHARED"),
    reason=f"needs {PARTI} (PartiPrompts in ../shared beside the checkout; set TTS_REQUIRE_SHARED=1 to fail instead)")


def headless_chromium(width: int = 1000, height: int = 900, console_log: bool = False):
    """Debian's Chromium, headless, through Selenium and chromedriver (no browser download)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={width},{height}"):
        options.add_argument(arg)
    if console_log:
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def compose(overrides=()):
    from hydra import compose as hydra_compose, initialize_config_dir
    from tts.core.configtree import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
        return hydra_compose(config_name="config", overrides=list(overrides))


def run_tts(overrides, run_dir):
    """Run a search in-process, exactly as tts-search does after Hydra has composed the config."""
    from tts.app.cli import run

    return run(compose(overrides), Path(run_dir))


@pytest.fixture(scope="session")
def twins_root(tmp_path_factory):
    return tmp_path_factory.mktemp("twins")
