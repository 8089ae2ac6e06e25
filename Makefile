# The two front-door commands (README.md) and a few conveniences.
# Each target installs what it needs from Debian's packages first.
PRESET ?= release
BUILD := build/$(PRESET)

.PHONY: demo test deps build bench format clean

deps:
	@bash scripts/install-deps.sh

build: deps
	@cmake --preset $(PRESET) >/dev/null
	@cmake --build --preset $(PRESET) -j2

# Server on the embedded store, two kinds of agents, a mixed workload, and a summary.
demo: build
	@bash scripts/demo.sh $(BUILD)/drover

# Every test: unit, simulation, store conformance, integration, crash safety, bench smoke.
test: build
	@cd $(BUILD) && ctest --output-on-failure -j2 --timeout 900

bench: build
	@bash bench/run_all.sh $(BUILD)

format:
	@git ls-files '*.cc' '*.h' | xargs clang-format -i

clean:
	@rm -rf build
