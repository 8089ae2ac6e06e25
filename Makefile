# Conveniences over scripts/ (README.md names the scripts, which need nothing installed).
.PHONY: demo test build bench format clean
demo:
	@bash scripts/demo
test:
	@bash scripts/test
build:
	@bash scripts/build.sh release
bench: build
	@bash bench/run_all.sh build/release
format:
	@git ls-files '*.cc' '*.h' | xargs clang-format -i
clean:
	@rm -rf build
