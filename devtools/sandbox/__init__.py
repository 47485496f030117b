"""In-process HTTP sandboxes that imitate vendor erasure APIs strictly, for tests and demos."""
