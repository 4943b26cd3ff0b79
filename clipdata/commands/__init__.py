"""One module per command; each is the API function the CLI wraps (clipdata/__init__.py
lists them). A command may import anything below it, never another command, except that
review apply writes through convert."""
