# Thin wrapper: CMake does the building. See README.md.
#   make          build into build/ (binaries in build/bin/)
#   make test     install what is missing, sanitizer builds, every test (ctest)
#   make demo     install what is missing, build, run the demo (KEEP=1: leave
#                 its collector running for the dashboard until Ctrl-C)
#   make fuzz     longer fuzz runs (clang)
#   make bench    the benchmarks, with the release build (build/bench/*.json)
#   make windows  the Windows agent, cross-built: build-win/bin/exfleet-agent.exe
#   make clean
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
FUZZ_SECONDS ?= 120

.PHONY: all deps build test demo fuzz bench windows clean

all: build

deps:
	@sh deploy/deps.sh

build: deps
	@cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build build -j $(JOBS)

# Tests run from a clang build with AddressSanitizer and UBSan (and the fuzz
# harnesses); the gcc build above must also compile without a warning. The
# Windows agent is built too: the wine test runs it. The modules that share
# work between threads (TLS handshakes on the thread pool, the store's
# writer, the relay's checks) are tested once more under ThreadSanitizer.
TSAN_TESTS = test_tls test_store test_server test_sign
test: build windows
	@cmake -S . -B build-test -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang \
		-DEXFLEET_SANITIZE=ON -DEXFLEET_FUZZ=ON \
		-DEXFLEET_WIN_AGENT=$(CURDIR)/build-win/bin/exfleet-agent.exe >/dev/null
	@cmake --build build-test -j $(JOBS)
	@cd build-test && ctest --output-on-failure -j $(JOBS)
	@cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang \
		-DEXFLEET_TSAN=ON >/dev/null
	@cmake --build build-tsan -j $(JOBS) --target $(TSAN_TESTS)
	@cd build-tsan && ctest --output-on-failure -j $(JOBS) \
		-R '^($(subst $(eval) ,|,$(TSAN_TESTS)))$$'

demo: build
	@sh deploy/demo.sh build/bin $(if $(KEEP),--keep)

fuzz: deps
	@cmake -S . -B build-test -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang \
		-DEXFLEET_SANITIZE=ON -DEXFLEET_FUZZ=ON -DEXFLEET_FUZZ_SECONDS=$(FUZZ_SECONDS) >/dev/null
	@cmake --build build-test -j $(JOBS)
	@cd build-test && ctest --output-on-failure -R '^fuzz_'
	@cmake -S . -B build-test -DEXFLEET_FUZZ_SECONDS=10 >/dev/null

bench: build
	@mkdir -p build/bench
	@sh tests/bench/agent.sh build/bin build/bench/agent.json >build/bench/agent.txt
	@sh tests/bench/collector.sh --agent-json build/bench/agent.json --keep build/bench/raw \
		build/bin build/bench/results.json

# Windows agent, cross-built with MinGW-w64 (deploy/windows/README.md).
windows: deps
	@sh deploy/windows/deps.sh
	@cmake -S windows -B build-win -DCMAKE_TOOLCHAIN_FILE=$(CURDIR)/cmake/mingw-w64.cmake \
		-DCMAKE_BUILD_TYPE=RelWithDebInfo \
		-DEXFLEET_WIN_PREFIX=$$(sh deploy/windows/deps.sh --prefix) >/dev/null
	@cmake --build build-win -j $(JOBS)

clean:
	rm -rf build build-test build-tsan build-win
