# One entry point for a fresh machine: `make demo` and `make test` install what they need first.
VENV ?= .venv
PY := $(VENV)/bin/python
# Exact versions for these CPU machines (torch from the local wheel store). On a cluster, install
# the package with your site's torch instead: pip install -e '.[dev]'.
CONSTRAINTS ?= constraints/cpu.txt
CORES ?= 2

.PHONY: install demo test lint clean-demo repro push pull status

install: $(VENV)/.installed

# The pinned stack takes about 7.3 GiB (torchvision pins a torch build that carries CUDA libraries).
NEED_GIB ?= 8

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	@free_kib=$$(df -Pk "$$(dirname $(VENV))" | awk 'NR == 2 {print $$4}'); \
	if [ "$$free_kib" -lt $$(( $(NEED_GIB) * 1024 * 1024 )) ]; then \
		echo "make install: $$(( free_kib / 1024 / 1024 )) GiB free on this disk, the pinned stack needs about $(NEED_GIB) GiB: free some space (or install elsewhere with VENV=/path) and run make again" >&2; \
		exit 1; \
	fi
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c $(CONSTRAINTS) torch torchvision
	$(PY) -m pip install -q -c $(CONSTRAINTS) -e '.[dev]'
	touch $@

demo: install
	$(VENV)/bin/snakemake --profile profiles/local --cores $(CORES) all

# Parallel workers, each taking whole test modules (a module's tests share its fixtures, in order).
# One more worker than cores: the SLURM and signal tests spend much of their time waiting.
TEST_WORKERS ?= $(shell echo $$(( $(CORES) + 1 )))
test: install
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

lint: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

clean-demo:
	rm -rf data runs results logs .snakemake

# DVC, one study at a time: dvc.yaml holds every study's stages, and these run dvc on STUDY's.
# `pull` brings a study's artifacts from the DVC remote and marks them current for Snakemake (a pull
# resets modification times; `llava-more pull` touches exactly what it wrote, recording its params).
STUDY ?= demo
STAGES = $$($(VENV)/bin/llava-more dvc-stages --study $(STUDY))
repro: install
	PATH=$(VENV)/bin:$$PATH $(VENV)/bin/dvc repro $(STAGES)
push: install
	$(VENV)/bin/dvc push $(STAGES)
pull: install
	PATH=$(VENV)/bin:$$PATH $(VENV)/bin/llava-more pull --study $(STUDY)
status: install
	$(VENV)/bin/dvc status $(STAGES)

# Regenerate dvc.yaml after changing the workflow or a study.
dvc.yaml: Snakefile params.yaml $(wildcard workflow/rules/*.smk)
	PATH=$(VENV)/bin:$$PATH $(VENV)/bin/llava-more dvc-yaml --out $@
