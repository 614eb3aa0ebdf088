PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test demo lint clean browser

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# Torch is pinned here (CPU machines take it from local files); pyproject keeps a range that admits it.
$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e ".[test]"
	@if $(PY) -m pip show -q opencv-python 2>/dev/null; then \
		echo "opencv-python is installed beside opencv-python-headless (both write cv2): remove it"; exit 1; fi
	touch $(STAMP)

install: $(STAMP)

# One torch thread per test process, two processes (pytest-xdist): two OpenMP threads on two cores stall each other.
# The fast cases first, then the ones marked slow.
test: install
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2 -m "not slow"
	@$(MAKE) --no-print-directory browser
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2 -m slow

# The page test of zoo serve (slow step) drives Debian's headless Chromium. Installed when this runs as root with
# apt-get (CI); otherwise the test skips and says why.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			chromium chromium-driver >/dev/null \
		|| echo "apt-get could not install chromium: the zoo serve browser test will be skipped"; \
	else echo "no chromium/chromedriver and no root apt-get: the zoo serve browser test will be skipped"; fi

lint: install
	$(PY) -m ruff check zoo tests train.py benchmarks
	$(PY) -m ruff format --check zoo tests train.py benchmarks

# One OpenMP thread unless set (two threads on two cores beside any other job stall each other).
demo: install
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m zoo demo

clean:
	rm -rf $(VENV) runs lightning_logs
