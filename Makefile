# Both targets build .venv on first use (torch, MuJoCo, dm_control, ...), then run.
VENV ?= .venv
PY := $(VENV)/bin/python
export MUJOCO_GL ?= egl

.PHONY: demo test venv clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	@free_kb=$$(df -Pk $(dir $(abspath $(VENV))) | awk 'NR==2 {print $$4}'); \
	if [ "$$free_kb" -lt 7000000 ]; then \
	  echo "warning: $$((free_kb / 1024)) MB free here; installing PyTorch (a CUDA build) into $(VENV) takes about 6 GB: free some disk first if pip fails with 'No space left on device'." >&2; \
	fi
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

test: $(VENV)/.installed
	$(PY) -m pytest tests

demo: $(VENV)/.installed
	$(PY) examples/demo.py

clean:
	rm -rf $(VENV) build *.egg-info
