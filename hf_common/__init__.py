"""What both stages share: adapter reading, the family registry, the plan format, console and errors."""
