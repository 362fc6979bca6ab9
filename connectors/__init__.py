"""The outside world: meter simulator, concentrator, MDMS ingest, delivery channels."""
