"""``python -m tts`` is ``tts-search`` (so ``torchrun -m tts`` and ``accelerate launch -m tts`` run it)."""
from .app.cli import main

if __name__ == "__main__":
    main()
