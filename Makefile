# Two commands do all the set-up on a fresh machine (Python 3.11+, Java 17 and Maven present):
#   make demo   - local Kafka broker + worker + synthetic clickstream, transitions printed live
#   make test   - the whole test suite against a real local Kafka broker
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test setup test-servers kafka-jars worker clean

demo: setup
	$(BIN)/stream-app demo

# the whole suite on the default broker (Kafka 3.9.1), then the worker's main Kafka tests on Kafka 4.4.0
test: setup test-servers
	$(BIN)/python -m pytest
	STREAM_APP_KAFKA_VERSION=4.4.0 $(BIN)/python -m pytest $(COMPAT_TESTS)

COMPAT_TESTS := tests/test_kafka_end_to_end.py tests/test_kafka_crash_recovery.py tests/test_driver_abort.py

setup: $(VENV)/.installed kafka-jars

test-servers:
	deploy/ensure-prometheus.sh
	deploy/ensure-kustomize.sh

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required, found " + sys.version.split()[0]'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test,bench]"
	touch $@

kafka-jars: $(VENV)/.installed
	$(BIN)/stream-app kafka fetch

worker: setup
	$(BIN)/stream-app worker

clean:
	rm -rf var .pytest_cache
