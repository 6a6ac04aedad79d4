"""Layer 8: the programs: ``cli`` (tts-search, Hydra), ``plan`` (tts-plan), ``serve`` and ``scheduler``
(tts-serve), ``replay`` (tts-replay) and ``ttsf`` (tt-scale-flux JSON configs). Imports run and below; only
``tts.api`` sits above."""
