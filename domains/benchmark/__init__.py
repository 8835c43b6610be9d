"""Cross-domain benchmark studies: the same evaluation suite run on several models and domains."""
