# opsmeter: the two commands a newcomer needs are `make demo` and `make test`.
# Both install whatever is missing (Debian packages, cargo-pgrx 0.18.1, pgrx init) first.
.PHONY: demo demo-stop test deps install fmt lint clean

demo:            ## build, install, start a throwaway cluster in .demo/, load a day, report
	@bash scripts/demo.sh

demo-stop:       ## stop the demo cluster
	@bash scripts/cluster.sh stop .demo

test:            ## every test layer: core, #[pg_test], pg_regress (LAYERS="core" to pick)
	@bash scripts/test.sh

deps:            ## only install what is missing
	@bash scripts/deps.sh

install: deps    ## release build installed into Debian's PostgreSQL 15
	cargo pgrx install --release --pg-config /usr/lib/postgresql/15/bin/pg_config

fmt:
	cargo fmt

lint:            ## formatting and clippy, warnings are errors
	cargo fmt --check
	cargo clippy --all-targets --features pg_test -- -D warnings

clean: demo-stop
	cargo clean
	rm -rf .demo .test
