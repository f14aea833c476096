# The two commands of the README:
#   make demo   install dependencies, build, run the demo
#   make test   install dependencies, build, run every test (not the `slow` label), then
#               an ASan+UBSan build of a subset (scripts/sanitizer-smoke.sh)
BUILD_DIR ?= build
BUILD_TYPE ?= RelWithDebInfo
CPSERVE_CUDA ?= AUTO
JOBS ?= $(shell nproc)
CTEST_ARGS ?=

.PHONY: all deps configure build test test-all demo format tidy clean asan tsan

all: build

deps:
	scripts/install-deps.sh

configure:
	cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) -DCPSERVE_CUDA=$(CPSERVE_CUDA)

build: configure
	cmake --build $(BUILD_DIR) -j $(JOBS)

test: deps build
	ctest --test-dir $(BUILD_DIR) --output-on-failure -j $(JOBS) -LE slow $(CTEST_ARGS)
	JOBS=$(JOBS) scripts/sanitizer-smoke.sh

# Everything, the slow label included.
test-all: deps build
	ctest --test-dir $(BUILD_DIR) --output-on-failure -j $(JOBS) $(CTEST_ARGS)

demo: deps build
	scripts/demo.sh $(BUILD_DIR)

format:
	scripts/check-format.sh --fix

tidy: configure
	run-clang-tidy -p $(BUILD_DIR) -quiet 'kernels/|worker/|router/|services/'

# Sanitizer builds of the unit and integration suites (see CMakePresets.json).
asan: deps
	cmake --preset asan && cmake --build --preset asan -j $(JOBS) && ctest --preset asan -L 'unit|integration'

tsan: deps
	scripts/build-tsan-absl.sh
	cmake --preset tsan && cmake --build --preset tsan -j $(JOBS) && ctest --preset tsan -L 'unit|integration'

clean:
	rm -rf $(BUILD_DIR)
