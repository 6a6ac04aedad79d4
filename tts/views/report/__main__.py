"""``python -m tts.views.report``: tts-report."""
from . import main

main()
