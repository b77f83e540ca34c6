#!/usr/bin/env bash
# Check the Dockerfile's build without a Docker engine.
#
# There is no Docker here, so this runs the steps of the Dockerfile that mean
# something outside a container -- the `pip ...` and `python ...` commands of
# its RUN lines -- in a fresh virtualenv in a temporary directory, against a
# copy of the build context filtered by .dockerignore (so a file the build
# needs but .dockerignore drops is caught too). Then it checks that:
#
#   - `twistd --help` of that virtualenv lists the apimgw plugin;
#   - the plugin cache (site-packages/twisted/plugins/dropin.cache) was
#     written, is newer than apimgw.py and knows apimgw;
#   - the wheel from `pip wheel --no-deps .` holds twisted/plugins/apimgw.py
#     and no twisted/plugins/__init__.py (which would hide Twisted's own
#     plugins) nor a prebuilt dropin.cache;
#   - the Dockerfile keeps its contract: python:3.11-slim base, a numeric
#     non-root USER, /apim/config created and chowned before VOLUME, ports
#     8080 8081 8082, the twistd entrypoint.
#
# Container-only commands (useradd, chown, mkdir, ...) are listed as skipped.
#
# Usage: .ci/dockerfile-steps.sh [CONTEXT_DIR]   (default: the repository)
# Environment: PYTHON (interpreter for the virtualenv; default the python3.X
# the FROM line names, else python3), KEEP=1 keeps the temporary directory.
# Exits 0 when everything holds, 1 with a "dockerfile-steps: FAIL:" line when
# something does not.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
context=$(cd "${1:-$repo}" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/dockerfile-steps.XXXXXX")
if [ "${KEEP:-0}" = 1 ]; then
    echo "dockerfile-steps: keeping $work"
else
    trap 'rm -rf "$work"' EXIT
fi

checker=python3
if ! command -v "$checker" >/dev/null; then
    echo "dockerfile-steps: FAIL: python3 is needed" >&2
    exit 1
fi

"$checker" - "$context" "$work" <<'PY'
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path, PurePosixPath

context, work = Path(sys.argv[1]), Path(sys.argv[2])
dockerfile = context / "Dockerfile"
checks_passed = []


def fail(message):
    print(f"dockerfile-steps: FAIL: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def ok(message):
    checks_passed.append(message)
    print(f"  ok: {message}", flush=True)


def say(message):
    print(f"dockerfile-steps: {message}", flush=True)


# --- parse the Dockerfile ---------------------------------------------------

def instructions(text):
    """
    (INSTRUCTION, arguments) for each logical line: continuation lines
    joined, comment lines (also inside a continuation) dropped.
    """
    out, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        if current.strip():
            word, _, rest = current.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
        current = ""
    if current.strip():
        word, _, rest = current.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


if not dockerfile.is_file():
    fail(f"no Dockerfile in {context}")
steps = instructions(dockerfile.read_text())
say(f"{dockerfile}: {len(steps)} instructions")

# --- static contract --------------------------------------------------------

froms = [args for word, args in steps if word == "FROM"]
if len(froms) != 1 or not froms[0].split()[0].startswith("python:3.11-slim"):
    fail(f"expected one FROM python:3.11-slim..., found {froms}")
base_version = "3.11"
ok(f"base image {froms[0].split()[0]}")

users = [args for word, args in steps if word == "USER"]
if not users:
    fail("no USER: the container would run as root")
uid = users[-1].split(":")[0]
if not uid.isdigit() or int(uid) == 0:
    fail(f"the last USER is {users[-1]!r}: it must be a numeric, non-zero uid "
         "(Kubernetes runAsNonRoot can only check a numeric one)")
ok(f"runs as uid {uid}")

volume_index = next((i for i, (w, _) in enumerate(steps) if w == "VOLUME"), None)
if volume_index is None or "/apim/config" not in steps[volume_index][1]:
    fail("no VOLUME /apim/config")
prepared = [a for w, a in steps[:volume_index]
            if w == "RUN" and "/apim/config" in a and "chown" in a and uid in a]
if not prepared:
    fail(f"/apim/config is not chowned to {uid} in a RUN before its VOLUME "
         "(changes after VOLUME are discarded)")
ok(f"/apim/config is owned by {uid} before VOLUME")

exposed = {p.split("/")[0] for w, a in steps if w == "EXPOSE" for p in a.split()}
if not {"8080", "8081", "8082"} <= exposed:
    fail(f"EXPOSE lists {sorted(exposed)}, expected 8080 8081 8082")
ok("exposes 8080 8081 8082")

entrypoints = [a for w, a in steps if w == "ENTRYPOINT"]
try:
    entrypoint = json.loads(entrypoints[-1]) if entrypoints else None
except ValueError:
    entrypoint = None
if entrypoint != ["twistd", "-n", "--pidfile=", "apimgw"]:
    fail(f"ENTRYPOINT is {entrypoints}, expected the exec form "
         '["twistd", "-n", "--pidfile=", "apimgw"]')
ok("entrypoint twistd -n --pidfile= apimgw")

# --- the build context, as .dockerignore leaves it --------------------------

def ignore_rules(path):
    rules = []
    if not path.is_file():
        return rules
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = str(PurePosixPath(line.lstrip("!").strip().lstrip("/")))
        regex, i = "", 0
        while i < len(pattern):
            c = pattern[i]
            if pattern.startswith("**/", i):
                regex += "(?:.*/)?"
                i += 3
                continue
            if pattern.startswith("**", i):
                regex += ".*"
                i += 2
                continue
            if c == "*":
                regex += "[^/]*"
            elif c == "?":
                regex += "[^/]"
            elif c == "[":
                j = pattern.find("]", i)
                if j < 0:
                    regex += re.escape(c)
                else:
                    regex += "[" + pattern[i + 1:j].replace("!", "^", 1) + "]"
                    i = j
            else:
                regex += re.escape(c)
            i += 1
        rules.append((re.compile(regex + r"\Z"), negate))
    return rules


def excluded(rel, rules):
    """
    Docker's rule: the last pattern that matches the path, or one of its
    parent directories, decides.
    """
    parts = rel.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    verdict = False
    for regex, negate in rules:
        if any(regex.match(p) for p in prefixes):
            verdict = not negate
    return verdict


rules = ignore_rules(context / ".dockerignore")
has_exceptions = any(negate for _, negate in rules)
ctx = work / "context"
ctx.mkdir()
copied = 0
for root, dirs, files in os.walk(context):
    rel_root = os.path.relpath(root, context)
    rel_root = "" if rel_root == "." else rel_root.replace(os.sep, "/")
    if Path(root).resolve() == work.resolve():
        dirs[:] = []
        continue
    if not has_exceptions:
        dirs[:] = [d for d in dirs if not excluded(f"{rel_root}/{d}".lstrip("/"), rules)]
    for name in files:
        rel = f"{rel_root}/{name}".lstrip("/")
        if excluded(rel, rules):
            continue
        target = ctx / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(Path(root) / name, target)
        copied += 1
say(f"build context: {copied} files after .dockerignore")
for needed in ("pyproject.toml", "twisted/plugins/apimgw.py"):
    if not (ctx / needed).is_file():
        why = "missing" if not (context / needed).exists() else "dropped by .dockerignore"
        fail(f"{needed} is not in the build context ({why})")

# --- the virtualenv ---------------------------------------------------------

python = (
    os.environ.get("PYTHON") or shutil.which(f"python{base_version}") or shutil.which("python3")
)
version = subprocess.run(
    [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
    capture_output=True, text=True, check=True,
).stdout.strip()
if version != base_version:
    say(f"warning: the image has Python {base_version}, this check uses {version} ({python})")
venv = work / "venv"
subprocess.run([python, "-m", "venv", str(venv)], check=True)
bindir = venv / "bin"
say(f"virtualenv {venv} (Python {version})")

# --- run the RUN steps that mean something outside a container --------------

env = dict(os.environ)
env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
env["VIRTUAL_ENV"] = str(venv)
env.pop("PYTHONPATH", None)
mapping = {}          # container directory -> host directory
workdir = "/"
root = work / "root"  # stands for every container path not copied from the context
root.mkdir()


def host_dir(container_path):
    for prefix in sorted(mapping, key=len, reverse=True):
        if container_path == prefix or container_path.startswith(prefix.rstrip("/") + "/"):
            return mapping[prefix] / os.path.relpath(container_path, prefix)
    path = root / container_path.lstrip("/")
    path.mkdir(parents=True, exist_ok=True)
    return path


def container_abspath(path):
    return str(PurePosixPath(workdir) / path) if not path.startswith("/") else path


ran = []
for word, args in steps:
    if word == "ENV":
        tokens = shlex.split(args)
        if tokens and "=" not in tokens[0]:
            env[tokens[0]] = " ".join(tokens[1:])
        else:
            for token in tokens:
                key, _, value = token.partition("=")
                env[key] = value
    elif word == "WORKDIR":
        workdir = container_abspath(args)
    elif word in ("COPY", "ADD"):
        tokens = [t for t in shlex.split(args) if not t.startswith("--")]
        sources, dest = tokens[:-1], container_abspath(tokens[-1])
        if sources == ["."]:
            mapping[dest] = ctx
        else:
            say(f"skipped (only `COPY . <dir>` is mapped): {word} {args}")
    elif word == "RUN":
        if args.startswith("["):
            say(f"skipped (exec form): RUN {args}")
            continue
        for command in re.split(r"\s*&&\s*", args):
            tokens = shlex.split(command)
            program = next((t for t in tokens if "=" not in t), "")
            if not re.fullmatch(r"(pip|pip3|python)(3(\.\d+)?)?", os.path.basename(program)):
                say(f"skipped (container-only): {command}")
                continue
            for prefix in sorted(mapping, key=len, reverse=True):
                command = command.replace(prefix, str(mapping[prefix]))
            cwd = host_dir(workdir)
            say(f"RUN (in {workdir} -> {cwd}): {command}")
            log = work / f"step-{len(ran) + 1}.log"
            with open(log, "wb") as out:
                done = subprocess.run(["bash", "-c", command], cwd=cwd, env=env,
                                      stdout=out, stderr=subprocess.STDOUT)
            if done.returncode != 0:
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-60:])
                fail(f"the Dockerfile step `{command}` failed with status "
                     f"{done.returncode}; its output ends with:\n{tail}")
            ran.append(command)

if not any(re.search(r"\bpip3?\b.*\binstall\b", c) for c in ran):
    fail("the Dockerfile has no `pip install` step that could be run")
if not any("getPlugins" in c for c in ran):
    fail("the Dockerfile has no plugin-cache step (python -c ... getPlugins ...)")
ok(f"{len(ran)} pip/python steps ran")

# --- what the steps produced ------------------------------------------------

site = Path(subprocess.run(
    [str(bindir / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
    capture_output=True, text=True, check=True,
).stdout.strip())
plugins = site / "twisted" / "plugins"
plugin = plugins / "apimgw.py"
cache = plugins / "dropin.cache"
if not plugin.is_file():
    fail(f"{plugin} was not installed")
records = list(site.glob("apimgw-*.dist-info/RECORD"))
if len(records) != 1:
    fail(f"expected one installed apimgw distribution in {site}, found {records}")
installed = {line.split(",")[0] for line in records[0].read_text().splitlines()}
for forbidden in ("twisted/__init__.py", "twisted/plugins/__init__.py"):
    if forbidden in installed:
        fail(f"apimgw installed its own {forbidden}, which replaces Twisted's")
if not cache.is_file():
    fail(f"the plugin cache {cache} was not written")
if cache.stat().st_mtime < plugin.stat().st_mtime:
    fail("dropin.cache is older than apimgw.py: twistd would rebuild it at every start")
if b"apimgw" not in cache.read_bytes():
    fail("dropin.cache does not mention apimgw")
ok("dropin.cache written, fresh, and lists apimgw")

helped = subprocess.run(
    [str(bindir / "twistd"), "--help"], capture_output=True, text=True, cwd=work, env=env,
)
listing = helped.stdout + helped.stderr
if helped.returncode != 0 or not re.search(r"^\s+apimgw\b", listing, re.M):
    fail(f"`twistd --help` does not list apimgw (status {helped.returncode}):\n{listing}")
ok("twistd --help lists apimgw")

wheels = work / "wheels"
built = subprocess.run(
    [str(bindir / "pip"), "wheel", "--no-deps", "--quiet", "-w", str(wheels), "."],
    cwd=ctx, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
)
found = sorted(wheels.glob("apimgw-*.whl")) if wheels.exists() else []
if built.returncode != 0 or len(found) != 1:
    fail(f"`pip wheel --no-deps .` failed or built {found}:\n{built.stdout[-4000:]}")
names = set(zipfile.ZipFile(found[0]).namelist())
if "twisted/plugins/apimgw.py" not in names:
    fail(f"{found[0].name} lacks twisted/plugins/apimgw.py")
for forbidden in ("twisted/__init__.py", "twisted/plugins/__init__.py",
                  "twisted/plugins/dropin.cache"):
    if forbidden in names:
        fail(f"{found[0].name} ships {forbidden}")
ok(f"{found[0].name} holds twisted/plugins/apimgw.py and no twisted/ __init__ or cache")

say(f"all {len(checks_passed)} checks passed")
PY
