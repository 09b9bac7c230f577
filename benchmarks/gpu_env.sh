# Sourced by the gpu_*.sh checks: the environment of a lent GPU machine. It has torch, Triton and
# the rest, but not Hydra or jsonschema; those travel as wheels in .whl/ (see gpu_check.sh) and
# are unpacked into /tmp/site. TRITON_INTERPRET=0: the real compiler (tests/conftest.py would
# otherwise turn the interpreter on). $OUT is created.
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0 PYTHONPATH=$PWD
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
fi
