# The two commands a newcomer needs: `make serve` and `make test`.
.PHONY: serve test lint bench

serve:
	@./scripts/bootstrap.sh
	.venv/bin/fhirpm serve $(ARGS)

test:
	@./scripts/bootstrap.sh
	.venv/bin/python -m pytest $(ARGS)

lint:
	@./scripts/bootstrap.sh
	.venv/bin/ruff check fhirpm tests bench scripts

bench:
	@./scripts/bootstrap.sh
	.venv/bin/python -m bench $(ARGS)
