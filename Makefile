# The two commands a newcomer needs: `make serve` and `make test` (README.md).
# Each first runs scripts/bootstrap.sh: find Python >= 3.13, create .venv, install.
.PHONY: serve test lint bench

serve:
	@./scripts/bootstrap.sh
	.venv/bin/fhirpm serve $(ARGS)

# pytest exits 5 when it collected no tests; make would report that as a bare "Error 5",
# so say what it means (a run that tests nothing is a failure, not a pass).
test:
	@./scripts/bootstrap.sh
	@.venv/bin/python -m pytest $(ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit 5)" >&2; fi; \
	exit $$rc

lint:
	@./scripts/bootstrap.sh
	.venv/bin/ruff check fhirpm tests bench scripts

bench:
	@./scripts/bootstrap.sh
	.venv/bin/python -m bench $(ARGS)
