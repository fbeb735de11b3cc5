# Two commands on a fresh Debian 12 machine: `make train` and `make test`.
BUILD ?= build
JOBS ?= $(shell nproc)
RECIPE ?= recipes/tiny-moe.toml
DATA := data/fortunes.train.tok data/fortunes.val.tok

.PHONY: deps build train test bench clean data

deps:
	@scripts/install-deps.sh

$(BUILD)/CMakeCache.txt: | deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release

build: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

$(DATA): | build
	$(BUILD)/switchyard data prepare --fortunes --out data/fortunes

data: $(DATA)

train: build data
	$(BUILD)/switchyard train $(RECIPE)

test: build data
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

bench: build data
	scripts/bench.sh

clean:
	rm -rf $(BUILD)
