"""The report: the paper's tables (Markdown, CSV, LaTeX) and per-benchmark plots from evaluated scores."""
