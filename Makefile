# The two commands a new user needs: `make demo` and `make test`.
.PHONY: demo test venv lock
venv:
	scripts/setup-venv

demo: venv
	.venv/bin/broker demo

test: venv
	scripts/check

# Maintainers only: re-resolve the lock after changing dependencies in pyproject.toml.
lock:
	uv pip compile pyproject.toml --extra dev --generate-hashes --python-version 3.11 \
	  --python-platform x86_64-unknown-linux-gnu -o requirements.lock
