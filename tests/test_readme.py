"""Every command README.md shows runs (issue 12.6): the README cannot drift from the code.

Each command of the README's ```bash blocks is run the way the table :data:`HOW` gives for its
longest matching prefix; a README command that no entry covers fails
(:func:`test_every_readme_command_has_an_entry`), so a new command in the README needs a line
here. The ways:

``help``
    ``<the command's leading words> --help`` exits 0 and lists every ``--option`` the README line
    shows (for synopses such as ``spgnet train EXPERIMENT --out DIR [--resume]``, and for
    commands too heavy to run here: a multi-GPU ``torchrun``, a server such as ``mlflow ui``).
``dry-run``
    the command itself as a dry run: ``snakemake -n``; ``dvc repro`` as ``dvc status`` (DVC's
    ``repro --dry`` hashes the inputs, which a fresh checkout has not built yet).
``run``
    the command itself, with its output file or folder in a scratch folder (cheap, read-only).
``weights-folder`` / ``weights-url``
    the ImageNet download steps (no network here): the folder is the paper profile's
    ``weights_root``, each URL is torchvision's for the backbone whose file it names.
``own-data``
    the dry run of a workflow over your own data set (docs/own-data.md), in a scratch copy of the
    project where ``spgnet make-synthetic --kind folder`` has written the data set its profile
    names (the profile reads its ``dataset.yaml`` as the workflow starts).
``make``
    ``make`` with Snakemake's dry run (``PROFILE=smoke SNAKEMAKE_ARGS='-n --forceall'``) or
    ``make -n``; only where the ``CI`` variable is set: ``make`` first re-points the shared
    environment (``scripts/ensure-env.sh``), which a developer's parallel sessions share.

README placeholders are replaced by scratch values (:data:`PLACEHOLDERS`). Inline ``--config
KEY=VALUE`` spans of the README's prose are checked too (:func:`test_inline_config_overrides_are_accepted`).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from spgnet.config import PROJECT_ROOT

README = PROJECT_ROOT / "README.md"
BIN = Path(sys.executable).parent

#: How a README command is run, by its longest matching prefix (see the module docstring).
HOW: dict[str, str] = {
    "make reproduce": "make",
    "make test": "make",
    "make rehearse": "make",  # the CPU rehearsal: its recipe (make -n)
    "make rehearse-slice": "make",
    "spgnet": "help",
    "python -m spgnet": "help",
    "torchrun": "help",  # torchrun's own options, then the `-m spgnet VERB ...` it starts
    "snakemake --report": "run",
    "snakemake --cores all reproduce_all --config profile=examples/": "own-data",
    "snakemake": "dry-run",
    "dvc repro": "dry-run",
    "dvc metrics show": "run",
    "dvc params diff": "run",
    "dvc plots show": "run",
    "dvc exp run": "help",  # runs for real in tests/test_dvc_experiments.py
    "dvc exp show": "help",
    "mlflow ui": "help",
    "python benchmarks/": "help",
    # where to put the ImageNet files: the paper profile's weights_root, and torchvision's URLs
    "mkdir -p ~/.cache/torch/hub/checkpoints": "weights-folder",
    "wget https://download.pytorch.org/models/": "weights-url",
}

#: README placeholders -> what the test puts there ({tmp}: the test's scratch folder).
PLACEHOLDERS = {
    "/data/sets": "{tmp}/data",  # the paper profile's data_root: a tree with the three set folders
    "reports/snakemake-report.html": "{tmp}/snakemake-report.html",
}


def readme_commands(text: str | None = None) -> list[str]:
    """The commands of the README's ```bash blocks: ``\\``-continued lines joined, comments and
    blank lines dropped, ``a; b`` split into two commands."""
    text = README.read_text(encoding="utf-8") if text is None else text
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"(^|\s)#.*$", "", line).strip()
            commands += [part.strip() for part in line.split(";") if part.strip()]
    return commands


def how(command: str) -> tuple[str, str] | None:
    """(prefix, way) of the longest entry of :data:`HOW` that ``command`` starts with."""
    matches = [p for p in HOW if command == p or command.startswith(p if p.endswith("/") else p + " ")]
    return (max(matches, key=len), HOW[max(matches, key=len)]) if matches else None


def _scratch(command: str, tmp: Path) -> str:
    """The command with its placeholders filled; a data tree and, in ``HOME``, the ImageNet file
    names the paper profile needs (empty files: the workflow's start check only looks for them)."""
    from spgnet.models.weights import plan_backbones, weights_file_name
    from spgnet.workflow.plan import make_plan

    for placeholder, value in PLACEHOLDERS.items():
        command = command.replace(placeholder, value.format(tmp=tmp))
    for folder in ("cityscapes", "VOCdevkit/VOC2012", "person_part"):
        (tmp / "data" / folder).mkdir(parents=True, exist_ok=True)
    cache = tmp / "home/.cache/torch/hub/checkpoints"
    cache.mkdir(parents=True, exist_ok=True)
    for backbone in plan_backbones(make_plan("paper", data_root=str(tmp / "data"))):
        (cache / weights_file_name(backbone)).touch()
    os.environ["SPGNET_TEST_HOME"] = str(tmp / "home")
    return command


def _run(words: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    if os.environ.get("SPGNET_TEST_HOME") and words[0] == "snakemake":
        environment["HOME"] = os.environ["SPGNET_TEST_HOME"]  # the paper profile's weights_root
    if words[0] == "python":
        words = [sys.executable, *words[1:]]
    return subprocess.run(words, cwd=PROJECT_ROOT, capture_output=True, text=True, env=environment, timeout=timeout)


def _options(words: list[str]) -> list[str]:
    return [w.strip("[]").split("=")[0] for w in words if w.strip("[").startswith("--")]


def _check_help(words: list[str]) -> None:
    if words[0] == "torchrun" and "-m" in words:
        split = words.index("-m")
        _check_help(words[:split])
        _check_help(["python", *words[split:]])
        return
    start = 3 if words[:2] == ["python", "-m"] else 1  # the program, then its verb and positionals
    lead = words[:start]
    for word in words[start:]:
        if word.startswith(("-", "[", "<")) or "..." in word:
            break
        lead.append(word)
    result = _run([*lead, "--help"], timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(lead)} --help: exit {result.returncode}: {output[-1500:]}"
    missing = [o for o in _options(words) if o not in output and o.replace("_", "-") not in output]
    assert not missing, f"{' '.join(lead)} --help does not list {missing} (README: {' '.join(words)})"


def _dry_run(words: list[str]) -> None:
    if words[0] == "snakemake":  # --forceall: every job, whatever this checkout has already built
        result = _run([words[0], "-n", "--forceall", *words[1:]])
        assert result.returncode == 0 and "This was a dry-run" in result.stdout, (result.stderr + result.stdout)[-3000:]
    elif words[:2] == ["dvc", "repro"]:
        result = _run(["dvc", "status", *words[2:]])
        assert result.returncode == 0, result.stderr[-2000:]
    else:
        raise AssertionError(f"no dry run known for {' '.join(words)}")


def _own_data_dry_run(words: list[str], tmp: Path) -> None:
    from tests.helpers_workflow import WORKFLOW_FILES, copy_project

    root = copy_project(tmp / "project", (*WORKFLOW_FILES, "examples"))
    config = dict(word.split("=", 1) for word in words[words.index("--config") + 1:])
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "SPGNET_ROOT": str(root),
           "PYTHONPATH": str(PROJECT_ROOT)}
    import yaml

    for name, source in yaml.safe_load((root / config["profile"]).read_text())["datasets"].items():
        if source.get("kind") == "folder":
            made = subprocess.run([sys.executable, "-m", "spgnet", "make-synthetic", "--kind", "folder", "--out",
                                   str(root / source["root"]), "--num-train", "2", "--num-val", "1", "--num-test", "0",
                                   "--height", "32", "--width", "48"], cwd=root, env=env, capture_output=True, text=True)
            assert made.returncode == 0, made.stderr
    result = subprocess.run([words[0], "-n", "--forceall", *words[1:]], cwd=root, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0 and "This was a dry-run" in result.stdout, (result.stderr + result.stdout)[-3000:]


def _real_run(words: list[str], tmp: Path) -> None:
    if words[:3] == ["dvc", "plots", "show"]:
        words = [*words, "-o", str(tmp / "plots")]
    result = _run(words)
    assert result.returncode == 0, (result.stderr + result.stdout)[-3000:]
    if words[:2] == ["snakemake", "--report"]:
        assert Path(words[2]).is_file()


def _make(words: list[str]) -> None:
    if not os.environ.get("CI"):
        pytest.skip("make re-points the shared environment (scripts/ensure-env.sh); runs where CI is set")
    target = words[1]
    if target == "reproduce":
        result = _run([*words, "PROFILE=smoke", "SNAKEMAKE_ARGS=-n --forceall"])
        assert result.returncode == 0 and "This was a dry-run" in result.stdout, (result.stderr + result.stdout)[-3000:]
    else:  # `make test` would run this very suite, `make rehearse` the CPU rehearsal: print the recipe instead
        result = _run(["make", "-n", *words[1:]])
        expected = "scripts/rehearse.sh" if target.startswith("rehearse") else "pytest"
        assert result.returncode == 0 and expected in result.stdout, (result.stderr + result.stdout)[-3000:]


COMMANDS = readme_commands()


def test_the_readme_shows_commands_and_every_one_has_an_entry():
    assert len(COMMANDS) >= 15  # the extractor reads the README's blocks
    unknown = [c for c in COMMANDS if how(c) is None]
    assert not unknown, (
        f"README command(s) {unknown} have no entry in tests/test_readme.py HOW: add one saying how "
        "the test runs it ('help', 'dry-run', 'run' or 'make')")


def test_the_extractor_joins_continuations_and_splits_sequences():
    text = "x\n```bash\na --b \\\n  c   # note\n# only a comment\n\nd; e f\n```\n```python\nnot a command\n```\n"
    assert readme_commands(text) == ["a --b    c", "d", "e f"]
    assert how("spgnet train X") == ("spgnet", "help") and how("snakemake --report r.html") == ("snakemake --report", "run")
    assert how("spgnetx") is None and how("python benchmarks/speed.py") == ("python benchmarks/", "help")


@pytest.mark.parametrize("command", COMMANDS, ids=COMMANDS)
def test_readme_command_runs(command, tmp_path):
    entry = how(command)
    if entry is None:
        pytest.fail(f"README command '{command}' has no entry in tests/test_readme.py HOW")
    words = shlex.split(_scratch(command, tmp_path))
    way = entry[1]
    if way == "help":
        _check_help(words)
    elif way == "dry-run":
        _dry_run(words)
    elif way == "run":
        _real_run(words, tmp_path)
    elif way == "make":
        _make(words)
    elif way == "own-data":
        _own_data_dry_run(words, tmp_path)
    elif way in ("weights-folder", "weights-url"):
        _check_weights_step(command, way)
    else:
        pytest.fail(f"HOW['{entry[0]}'] = '{way}' is not one of help, dry-run, run, make")


def _check_weights_step(command: str, way: str) -> None:
    from spgnet.config import load_profile
    from spgnet.models.weights import weights_file_name, weights_url

    if way == "weights-folder":
        folder = command.split("&&")[0].split()[-1]
        assert Path(folder).expanduser() == Path(load_profile("paper", data_root="/data").weights_root), command
        return
    url = command.split()[1]
    backbones = ["resnet18", "resnet50", "resnet101", "resnet152", "densenet161"]
    named = [b for b in backbones if weights_file_name(b) == url.rsplit("/", 1)[-1]]
    assert named and weights_url(named[0]) == url, f"{url} is not torchvision's file for any backbone"


def test_inline_config_overrides_are_accepted():
    """``--config dvc_lock=false`` and the like, as the README's prose shows them."""
    from spgnet.workflow.support import check_config

    spans = re.findall(r"`--config ([^`]+)`", README.read_text(encoding="utf-8"))
    assert spans, "the README shows no inline --config span"
    for span in spans:
        config = {"profile": "mini"}
        for pair in span.split():
            key, value = pair.split("=", 1)
            config[key] = value
        check_config(config)  # raises ConfigError on a value the workflow would refuse
