# A thin layer over CMake. The README's two commands:
#   make demo   installs what is missing, builds, and reports on a real corpus
#   make test   installs what is missing, builds plain and with ASan+UBSan,
#               and runs every test in both
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
# The Python tests run in the project's venv, made from the python3 first
# on PATH with the pinned packages of requirements/ (torch first).
PYTHON ?= python3
VENV ?= .venv
DEMO_CORPUS ?= fixtures/corpus/python-docs.jsonl.zst
DEMO_ARGS ?= --max-seq-len 2048 --overlong split

.PHONY: chat-demo all deps deps-test venv build build-only demo demo-report test test-plain test-sanitize test-readme bench format clean

all: build

deps:
	@bash scripts/deps.sh build

deps-test:
	@bash scripts/deps.sh test

# Remade when a requirements file changes; torch==2.13.0 goes in before
# anything that could pull another torch.
venv: $(VENV)/.installed
$(VENV)/.installed: requirements/torch.txt requirements/test.txt \
		requirements/nodeps.txt | deps-test
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -r requirements/torch.txt
	$(VENV)/bin/pip install -q -r requirements/test.txt
	$(VENV)/bin/pip install -q --no-deps -r requirements/nodeps.txt
	touch $@

build: deps build-only

build-only:
	cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DPREPACK_WERROR=ON
	cmake --build build -j $(JOBS)

demo: build
	@$(MAKE) -s --no-print-directory demo-report

# The demo's report alone, with the prepack command PREPACK: what the
# README shows (scripts/sample_outputs.py runs it to regenerate that).
PREPACK ?= ./build/prepack
demo-report:
	@rm -f out/report.svg
	$(PREPACK) pack $(DEMO_CORPUS) -o out --overwrite $(DEMO_ARGS) --svg out/report.svg.tmp
	$(PREPACK) verify out --input $(DEMO_CORPUS)
	@mv out/report.svg.tmp out/report.svg && echo "report drawn in out/report.svg"

# Conversations to a verified shard set: tokenized with the bundled
# tokenizer's chat template, the assistant's tokens alone trained.
chat-demo: build venv
	PYTHONPATH=python PREPACK_LIBRARY=build/libprepack.so \
	  $(VENV)/bin/python -m prepack pack fixtures/text/conversations.jsonl \
	  --tokenizer fixtures/text/tokenizer --assistant-only-loss \
	  --max-seq-len 1024 -o out-chat --overwrite
	./build/prepack verify out-chat

test: test-plain test-sanitize

test-plain: deps-test venv
	cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DPREPACK_WERROR=ON \
	  -DPREPACK_PYTHON=$(abspath $(VENV))/bin/python
	cmake --build build -j $(JOBS)
	cd build && ctest --output-on-failure -j $(JOBS) -LE readme

# The README's runnable blocks in a fresh clone and a fresh venv
# (tests/install/test_readme.py: about 11 minutes on 2 cores, so apart
# from make test, which CI runs).
test-readme: deps-test venv
	cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DPREPACK_WERROR=ON \
	  -DPREPACK_PYTHON=$(abspath $(VENV))/bin/python
	cmake --build build -j $(JOBS)
	cd build && ctest --output-on-failure -L readme

test-sanitize: deps-test venv
	cmake -S . -B build-sanitize -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DPREPACK_SANITIZE=ON -DPREPACK_WERROR=ON -DPREPACK_BUILD_BENCH=OFF \
	  -DPREPACK_PYTHON=$(abspath $(VENV))/bin/python
	cmake --build build-sanitize -j $(JOBS)
	cd build-sanitize && ctest --output-on-failure -j $(JOBS)

bench: build
	./build/bench/bench_plan

# clang-format over the C and C++ sources (.clang-format), installing it
# first if missing.
FORMAT_FILES = $(shell git ls-files 'src/*.[ch]' 'src/*.cpp' 'include/*.h' \
  'tests/*.[ch]' 'bench/*.[ch]' 'fuzz/*.[ch]' 'examples/*.c')
format:
	@command -v clang-format >/dev/null || bash scripts/deps.sh format
	clang-format -i $(FORMAT_FILES)

clean:
	rm -rf build build-sanitize $(VENV)
