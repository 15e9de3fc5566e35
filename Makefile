# The two commands of README.md. Each creates the Python environment first when it is missing
# (scripts/ensure-env.sh: once, about 10 minutes; later calls reuse it).
PROFILE ?= mini
CORES ?= all
PYTEST_ARGS ?=
SNAKEMAKE_ARGS ?=

.PHONY: reproduce test profile rehearse rehearse-slice slurm-up slurm-down slurm-test

## reproduce: the whole reproduction on the embedded default (Tables 1-12 -> reports/tables.md)
reproduce:
	@venv=$$(bash scripts/ensure-env.sh) && export PATH="$$venv/bin:$$PATH" PYTHONPATH="$(CURDIR)$${PYTHONPATH:+:$$PYTHONPATH}" && \
	  snakemake --cores $(CORES) $(SNAKEMAKE_ARGS) reproduce_all --config profile=$(PROFILE)

## test: the test suite (what CI runs): the tests in parallel, then alone the rehearsal-marked ones
## (CI's slice of the CPU rehearsal, ~6 GB per process: never beside other tests); exit 5 of the
## second phase (PYTEST_ARGS selected none of them) is no failure
test:
	@venv=$$(bash scripts/ensure-env.sh) || exit 1; export PATH="$$venv/bin:$$PATH" PYTHONPATH="$(CURDIR)$${PYTHONPATH:+:$$PYTHONPATH}"; \
	  python -m pytest -p no:cacheprovider -n 2 --dist loadgroup -m "not rehearsal" $(PYTEST_ARGS); parallel=$$?; \
	  python -m pytest -p no:cacheprovider -m rehearsal $(PYTEST_ARGS); serial=$$?; \
	  if [ $$serial -eq 5 ]; then serial=0; fi; \
	  echo "make test: parallel tests exit $$parallel, rehearsal tests exit $$serial"; \
	  [ $$parallel -eq 0 ] && [ $$serial -eq 0 ]

## rehearse: the paper profile's code path end to end at the paper's sizes on this CPU (README, "CPU rehearsal")
rehearse:
	@venv=$$(bash scripts/ensure-env.sh) && export PATH="$$venv/bin:$$PATH" PYTHONPATH="$(CURDIR)$${PYTHONPATH:+:$$PYTHONPATH}" && \
	  bash scripts/rehearse.sh

## rehearse-slice: CI's part of it (tests/test_rehearsal.py runs the same in a scratch copy)
rehearse-slice:
	@venv=$$(bash scripts/ensure-env.sh) && export PATH="$$venv/bin:$$PATH" PYTHONPATH="$(CURDIR)$${PYTHONPATH:+:$$PYTHONPATH}" && \
	  bash scripts/rehearse.sh --slice

## profile: #Params / #FLOPs of every experiment at paper scale
profile:
	@venv=$$(bash scripts/ensure-env.sh) && "$$venv/bin/spgnet" profile

## slurm-up: a real one-node SLURM cluster on this machine (root; installs slurm-wlm and munge when missing;
## SLURM_LOCAL_GPUS fake GPUs, default 2): scripts/slurm-local.sh
slurm-up:
	@bash scripts/slurm-local.sh up

## slurm-down: stop it (the daemons slurm-up started, by their pid files)
slurm-down:
	@bash scripts/slurm-local.sh down

## slurm-test: the tests against that cluster, alone (no -n): raw sbatch/GRES/scancel, then the workflow through the
## executor plugin (about 8 minutes); they bring it up, and down again when it was not up before (.ci/run: after make test)
slurm-test:
	@venv=$$(bash scripts/ensure-env.sh) && export PATH="$$venv/bin:$$PATH" PYTHONPATH="$(CURDIR)$${PYTHONPATH:+:$$PYTHONPATH}" && \
	  python -m pytest -p no:cacheprovider -m slurm $(PYTEST_ARGS) tests/test_slurm_cluster.py tests/test_slurm_workflow.py
