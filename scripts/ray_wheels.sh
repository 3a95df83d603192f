#!/usr/bin/env bash
# Download Ray Serve and the packages the GPU machine lacks (cp312, manylinux x86_64) into .whl/,
# and trim the Ray wheel of what serving does not use, so that .whl/ can be carried to a machine
# without network access (the device tool carries at most 64 MiB per call; this keeps it < 55 MiB).
#
#   bash scripts/ray_wheels.sh            # here, with network
#   # on the GPU machine (run with carry [".whl"]):
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
#     && export PYTHONPATH=/tmp/site:$PWD
#
# Trimmed from the Ray wheel: Java jars, the dashboard's web front end (its Python stays: the raylet
# starts the dashboard agent), rllib/tune/train/data/llm/workflow, tests, debug symbols of the
# native libraries (strip --strip-debug: code and dynamic symbols are kept). RECORD is rewritten.
# Environment: RAY_VERSION (default 2.60.0), PY (default 3.12), OUT (default .whl), PIP (default
# "python3 -m pip"), LIMIT_MIB (default 55: fail if .whl/ ends up larger).
set -euo pipefail

RAY_VERSION="${RAY_VERSION:-2.60.0}"
PY="${PY:-3.12}"
OUT="${OUT:-.whl}"
PIP="${PIP:-python3 -m pip}"
LIMIT_MIB="${LIMIT_MIB:-55}"
ABI="cp${PY/./}"

# What ray[serve] (and flexrt[serve]) need at run time for flexrt serve that the GPU image (torch 2.11, aiohttp,
# grpcio, msgpack, protobuf, pyyaml, requests, prometheus-client, click, filelock, packaging,
# anyio, h11, httpx, uvloop, attrs, typing-extensions, annotated-doc ...) does not have.
PACKAGES=(
  "ray==${RAY_VERSION}"
  "fastapi>=0.133,<1" "starlette>=1.0.1,<2" "uvicorn>=0.26,<1"
  "pydantic>=2.5,<3" pydantic-core annotated-types typing-inspection
  jsonschema jsonschema-specifications referencing rpds-py
  opentelemetry-api importlib-metadata zipp  # fastapi >= 0.16x imports opentelemetry
  "grpcio-reflection==${GRPC_REFLECTION_VERSION:-1.60.0}"  # imported by ray.serve; old gencode, loads on protobuf 4.21+ (checked on 7.x)
  "orjson>=3.10,<4"  # flexrt[serve]: JSON responses
  "httptools>=0.6,<1"  # uvicorn[standard], which ray[serve] requires: without it uvicorn parses HTTP in pure Python (h11)
)

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$OUT"
rm -f "$OUT"/*.whl

$PIP download --no-deps --only-binary=:all: --implementation cp --python-version "$PY" \
  --abi "$ABI" --abi abi3 --abi none \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  -d "$tmp/dl" "${PACKAGES[@]}"

# pydantic-core must be the exact version pydantic pins: resolve it from pydantic's metadata
pyd="$(ls "$tmp"/dl/pydantic-[0-9]*.whl)"
want_core="$(unzip -p "$pyd" '*.dist-info/METADATA' | sed -n 's/^Requires-Dist: pydantic-core==\([0-9.]*\).*/\1/p' | head -1)"
have_core="$(ls "$tmp"/dl/pydantic_core-*.whl | sed 's/.*pydantic_core-\([0-9.]*\)-.*/\1/')"
if [ -n "$want_core" ] && [ "$want_core" != "$have_core" ]; then
  rm -f "$tmp"/dl/pydantic_core-*.whl
  $PIP download --no-deps --only-binary=:all: --implementation cp --python-version "$PY" --abi "$ABI" \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 -d "$tmp/dl" "pydantic-core==$want_core"
fi

for w in "$tmp"/dl/*.whl; do
  case "$(basename "$w")" in
    ray-*) ;;
    *) cp "$w" "$OUT/" ;;
  esac
done

ray_whl="$(ls "$tmp"/dl/ray-*.whl)"
python3 - "$ray_whl" "$OUT" <<'PY'
"""Trim the Ray wheel and write it back with a correct RECORD."""
import base64, hashlib, os, shutil, subprocess, sys, tempfile, zipfile

src, out = sys.argv[1], sys.argv[2]
DROP_PREFIXES = (
    "ray/jars/", "ray/dashboard/client/build/", "ray/rllib/", "ray/tune/", "ray/train/", "ray/data/",
    "ray/llm/", "ray/workflow/", "ray/serve/llm/", "ray/cpp/",
)
STRIP = ("ray/_raylet.so", "ray/core/src/ray/raylet/raylet", "ray/core/src/ray/gcs/gcs_server")


def dropped(name: str) -> bool:
    if name.startswith(DROP_PREFIXES):
        return True
    parts = name.split("/")
    return "tests" in parts[:-1] or name.endswith(".js.map")


work = tempfile.mkdtemp()
kept, removed = 0, 0
with zipfile.ZipFile(src) as z:
    infos = z.infolist()
    record = next(i.filename for i in infos if i.filename.endswith(".dist-info/RECORD"))
    rows = []
    dst = os.path.join(out, os.path.basename(src))
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as o:
        for info in infos:
            name = info.filename
            if name == record or name.endswith("/"):
                continue
            if dropped(name):
                removed += 1
                continue
            data = z.read(info)
            if name in STRIP:
                path = os.path.join(work, os.path.basename(name))
                with open(path, "wb") as f:
                    f.write(data)
                subprocess.run(["strip", "--strip-debug", path], check=True)
                with open(path, "rb") as f:
                    data = f.read()
            zi = zipfile.ZipInfo(name, date_time=info.date_time)
            zi.external_attr = info.external_attr  # keep the executables executable
            zi.compress_type = zipfile.ZIP_DEFLATED
            o.writestr(zi, data, compresslevel=9)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            rows.append(f"{name},sha256={digest},{len(data)}")
            kept += 1
        rows.append(f"{record},,")
        o.writestr(record, "\n".join(rows) + "\n")
shutil.rmtree(work)
print(f"trimmed {os.path.basename(src)}: kept {kept} files, removed {removed}; {os.path.getsize(src) / 2**20:.1f} -> "
      f"{os.path.getsize(dst) / 2**20:.1f} MiB")
PY

total=$(du -sm "$OUT" | cut -f1)
ls -la "$OUT"
echo "total: ${total} MiB in $OUT"
if [ "$total" -gt "$LIMIT_MIB" ]; then
  echo "error: $OUT is ${total} MiB, over ${LIMIT_MIB} MiB" >&2
  exit 1
fi
