# dsprobe: every target makes its own virtualenv, so a fresh machine needs only python3 >= 3.10.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint test-numpy1 verify lab bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[onnx,notebook,dask,dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m dsprobe.cli.demo --out out/demo

test: $(STAMP)
	$(PY) -m pytest -q

# ruff: pyflakes, pycodestyle, import order, bugbear, complexity (pyproject.toml), and the format check
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

lab: $(STAMP)
	$(VENV)/bin/jupyter lab --allow-root notebooks/  # --allow-root: dev containers and Jetsons often run as root

bench: $(STAMP)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) out .pytest_cache

# Heavy cross-checks (torchvision NMS, OpenCV groupRectangles, Ultralytics YOLOv8 postprocess) in their own venv.
VENV_VERIFY ?= .venv-verify
$(VENV_VERIFY)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV_VERIFY)
	$(VENV_VERIFY)/bin/pip install -q torch==2.14.1 torchvision==0.29.1
	$(VENV_VERIFY)/bin/pip install -q ultralytics "opencv-python<5" "opencv-python-headless<5" pytest  # OpenCV 5 dropped groupRectangles
	$(VENV_VERIFY)/bin/pip install -q -e .
	touch $@

verify: $(VENV_VERIFY)/.installed
	$(VENV_VERIFY)/bin/python -m pytest -q -m slow tests/verify
	$(VENV_VERIFY)/bin/python benchmarks/bench_postprocess.py

# pyds 1.2 (DeepStream 7.1/8.0) needs numpy < 2: the device-side core also runs its tests on numpy 1.26.
VENV_NP1 ?= .venv-numpy1
$(VENV_NP1)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV_NP1)
	$(VENV_NP1)/bin/pip install -q -e . "numpy<2" pytest pillow pyyaml
	touch $@

test-numpy1: $(VENV_NP1)/.installed
	$(VENV_NP1)/bin/python -c "import numpy; assert numpy.__version__ < '2', numpy.__version__; print('numpy', numpy.__version__)"
	$(VENV_NP1)/bin/python -m pytest -q tests/test_nvinfer_config.py tests/test_geometry.py tests/test_detections.py \
		tests/test_registry.py tests/test_decoders.py tests/test_cluster.py tests/test_scale.py tests/test_pipeline.py \
		tests/test_deepstream_probe.py tests/test_deepstream_live.py tests/test_recording_roundtrip.py \
		tests/test_deepstream_fixes.py tests/test_deepstream_double.py tests/test_deepstream_doctor.py \
		tests/test_faults_recorder.py tests/test_recording_crash.py tests/test_recording_recorder.py \
		tests/test_bundle.py tests/test_user_steps_live.py tests/test_secondary_live.py tests/test_params.py \
		--deselect tests/test_faults_recorder.py::test_record_onnx_checks_its_output_before_any_model_or_frame
