"""Training: optimisers and schedules by name, callbacks, and the fit loop."""
