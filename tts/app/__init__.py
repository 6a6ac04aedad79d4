"""Layer 8: the programs: ``cli`` (tts-search, Hydra) with ``overrides`` (the command line checked before Hydra),
``build`` (components built and validated from a composed config), ``errors`` and ``messages`` (what it prints);
``plan`` (tts-plan), ``serve`` and ``scheduler`` (tts-serve), ``replay`` (tts-replay) and ``ttsf`` (tt-scale-flux
JSON configs). Imports run and below; only ``tts.api`` sits above."""
