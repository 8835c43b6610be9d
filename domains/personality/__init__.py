"""Personality and persona audits of LLMs: the Big Five inventory, persona vectors and features, steering."""
