"""Pure de-identification and aggregation transforms on frames."""
