"""Runners of the protein case studies (``case_study.runner`` points here)."""
