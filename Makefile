# Nibble: the two commands of the README.
#   make demo  — set up, then run the MTCNN face detector on three photographs on the simulated
#                accelerator (RTL under Verilator), against the float model
#   make test  — set up, then run the whole test suite
# Also: make digits (the digits CNN on the simulated accelerator), make sr, bench, gen.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.nibble-installed

.PHONY: demo digits sr test bench gen setup clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e ".[test,data,train]"
	touch $(STAMP)

demo: $(STAMP)
	mkdir -p build
	$(PY) scripts/mtcnn_demo.py --device sim --out-dir build

digits: $(STAMP)
	mkdir -p build
	$(VENV)/bin/nibble run models/digits/digits_cnn.onnx \
	    --inputs models/digits/test_x.npy --labels models/digits/test_y.npy \
	    --calib models/digits/calib_x.npy --device sim --out build/digits_rtl_out.npy --json

sr: $(STAMP)
	mkdir -p build
	$(VENV)/bin/nibble run models/sr/fsrcnn_x2.onnx \
	    --inputs models/sr/test_lr.npy --reference models/sr/test_hr.npy --bicubic \
	    --calib models/sr/calib_x.npy --device sim --out build/sr_rtl_out.npy --json

# One BLAS thread: the golden model's float64 products are small, and simulator processes run
# beside the tests (two threads waiting on each other ran 10x slower). TEST_WORKERS pytest-xdist
# workers (default 2, the CI's cores), each running whole test files (their module fixtures:
# simulator builds, synthesis caches, trained models, are made once).
TEST_WORKERS ?= 2
test: $(STAMP)
	OPENBLAS_NUM_THREADS=1 $(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile

bench: $(STAMP)
	mkdir -p build
	$(VENV)/bin/nibble bench -o build/bench.json

gen: $(STAMP)
	$(VENV)/bin/nibble gen --board kc705 -o build/kc705

clean:
	rm -rf build
