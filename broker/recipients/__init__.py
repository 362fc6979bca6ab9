"""The registry of the parties data is released to: third parties and the grid operator's EMS."""
