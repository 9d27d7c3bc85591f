"""Views of the whole pipeline: dvc.yaml generated from the Snakemake DAG, and the study plan."""
