"""``python -m tts.app.serve``: tts-serve."""
from . import main

main()
