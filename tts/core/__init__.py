"""Layer 1, the bottom: values and helpers every other layer shares, importing nothing else of tts: the run-folder
records (``records``) and the run folder itself (``runfolder``), noise lineages and seeds (``noise``), argument
checks (``validate``), torch devices and dtypes (``torchutil``) and the shipped config tree and templates
(``configtree``)."""
