"""Layer 6: what a run folder looks like: collages of the best candidates (``collage``, tts-collage) and the
HTML report (``report``, tts-report). Reads run folders; imports search, verifiers and below."""
