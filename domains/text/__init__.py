"""General English text for language models, offline: a corpus of real prose (the Python
standard library's docstrings) and token-level concepts (lexical classes and the spans a
token sits in) read from an activation store's own token column."""
