"""Real data sources: the LLaVA sets on the Hugging Face Hub, seeded web subsets downloaded with
img2dataset (and their offline demo twins), balanced mixes, safe archive extraction and dense
re-captioning. Every fetched dataset ends in the common layout of ``layout.py``.

Import names from their modules (``hub``, ``web_subset``, ``demo_web``, ``mix``, ``archive``,
``recaption``...). The package itself imports nothing, so the CLI lists its commands without
importing torch or img2dataset.
"""
