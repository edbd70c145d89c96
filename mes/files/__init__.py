"""G-code files: validation, content-addressed storage and copies between nodes."""
