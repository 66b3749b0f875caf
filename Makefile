# nnc — the two commands a new user needs:
#   make demo   set up, compile an MLPerf Tiny model for Cortex-M7, run it on the emulated board,
#               print its outputs, instruction counts, RAM and flash
#   make test   set up and run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
NNC    := $(VENV)/bin/nnc
DEMO_MODEL := benchmarks/models/kws.onnx
DEMO_OUT   := demo_out
DEMO_TARGET ?= cortex-m7
DEMO_CAL   := benchmarks/models/kws_calibration.npz

.PHONY: install toolchain demo test test-fast bench conformance lint clean

# Debian packages: the Cortex-M cross compiler + C library, the board emulator, and OpenCL
# (PoCL's CPU device, the ICD loader and headers, clinfo) for the opencl target's tests, and
# chromium (headless) that renders the HTML report in its test (~113 MB with its libraries).
APT_PACKAGES := gcc gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm \
	pocl-opencl-icd ocl-icd-opencl-dev opencl-c-headers clinfo chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

install: $(VENV)/.installed toolchain

toolchain:
	@if ! command -v gcc >/dev/null || ! command -v arm-none-eabi-gcc >/dev/null \
	    || ! command -v qemu-system-arm >/dev/null || [ ! -d /usr/lib/arm-none-eabi/newlib ] \
	    || [ ! -f /usr/include/CL/cl.h ] || ! command -v clinfo >/dev/null \
	    || [ ! -f /etc/OpenCL/vendors/pocl.icd ] || ! command -v chromium >/dev/null; then \
	  echo "installing $(APT_PACKAGES) with apt-get"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES) >/dev/null; \
	fi

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test,tvm]" > $(VENV)/pip.log 2>&1 || (cat $(VENV)/pip.log; exit 1)
	$(PY) -c "import nnc, onnxruntime, pytest"
	touch $@

$(DEMO_MODEL): install benchmarks/models/mlperf_tiny.py
	$(PY) -m benchmarks.models.mlperf_tiny benchmarks/models

$(DEMO_CAL): $(DEMO_MODEL) benchmarks/models/calibration.py
	$(PY) -m benchmarks.models.calibration $(DEMO_MODEL) $@

# float32, then int8 (nnc's generated int8 kernels; CMSIS-NN calls with CMSIS_NN_PATH) with its accuracy report
demo: install $(DEMO_MODEL) $(DEMO_CAL)
	$(NNC) compile $(DEMO_MODEL) --target $(DEMO_TARGET) -o $(DEMO_OUT)
	$(NNC) run $(DEMO_OUT)
	$(NNC) bench $(DEMO_OUT)
	$(NNC) compile $(DEMO_MODEL) --target $(DEMO_TARGET) --quantize int8 --calibration $(DEMO_CAL) --report -o $(DEMO_OUT)_int8
	$(NNC) run $(DEMO_OUT)_int8
	$(NNC) bench $(DEMO_OUT)_int8

# two workers (pytest-xdist), one per core; --dist loadfile keeps each test file's module
# fixtures (built models, firmware) in one worker. PYTEST_WORKERS=0 runs in one process.
PYTEST_WORKERS ?= 2
PYTEST_XDIST = $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadfile)

test: install
	$(PY) -m pytest -q $(PYTEST_XDIST)

test-fast: install
	$(PY) -m pytest -q $(PYTEST_XDIST) -m "not slow"

bench: install
	$(PY) -m benchmarks.bench_host

conformance: install
	$(PY) -m pytest -q -s tests/test_conformance.py

# mypy's targets (nnc.ir, nnc.passes) and options are in pyproject.toml [tool.mypy]
lint: install
	$(VENV)/bin/ruff check .
	$(PY) -m mypy

clean:
	rm -rf $(DEMO_OUT) out build .pytest_cache
