"""What the regulator reads: the audit log's entries and the release and consent metrics."""
