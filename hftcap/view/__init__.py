"""The live view: the terminal UI and its data source over a running session."""
