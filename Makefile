# `make demo`: set up and annotate the bundled clip. `make test`: set up and run the tests.
PY ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-dev

.PHONY: setup demo test clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/python main.py --video assets/vtest_people.mp4 --out out/vtest_annotated.mp4

test: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(VENV)/bin/python -m pytest

clean:
	rm -rf $(VENV) out
