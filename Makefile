# The two commands of README.md. Each creates the Python environment first when it is missing
# (scripts/ensure-env.sh: once, about 10 minutes; later calls reuse it).
PROFILE ?= mini
CORES ?= all
PYTEST_ARGS ?=
SNAKEMAKE_ARGS ?=

.PHONY: reproduce test profile

## reproduce: the whole reproduction on the embedded default (Tables 1-12 -> reports/tables.md)
reproduce:
	@venv=$$(bash scripts/ensure-env.sh) && export PATH="$$venv/bin:$$PATH" PYTHONPATH="$(CURDIR)$${PYTHONPATH:+:$$PYTHONPATH}" && \
	  snakemake --cores $(CORES) $(SNAKEMAKE_ARGS) reproduce_all --config profile=$(PROFILE)

## test: the test suite (what CI runs)
test:
	@venv=$$(bash scripts/ensure-env.sh) && export PATH="$$venv/bin:$$PATH" PYTHONPATH="$(CURDIR)$${PYTHONPATH:+:$$PYTHONPATH}" && \
	  python -m pytest -p no:cacheprovider -n 2 --dist loadgroup $(PYTEST_ARGS)

## profile: #Params / #FLOPs of every experiment at paper scale
profile:
	@venv=$$(bash scripts/ensure-env.sh) && "$$venv/bin/spgnet" profile
