"""The two pipelines run the same ``spgnet`` commands (issue 23): every command line comes from
:mod:`spgnet.workflow.commands`, and the lines Snakemake prints for a dry run of the mini profile
equal the lines DVC resolves from ``dvc.yaml``, but for the three differences that module's
docstring gives (where overrides come from, ``--resume``, the evaluation a CPU training job runs
itself)."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

from spgnet.workflow import commands
from spgnet.workflow.plan import make_plan

ROOT = Path(__file__).resolve().parent.parent


def _spgnet_words(line: str) -> list[str] | None:
    """The words after ``spgnet`` of a printed shell command, without its environment prefix and
    log redirection; None for a command that is not a ``spgnet`` call (``dvc commit``, ``true``)."""
    words = shlex.split(line)
    while words and "=" in words[0] and not words[0].startswith("-"):  # OMP_NUM_THREADS=1
        words = words[1:]
    if not words or words[0] != "spgnet":
        return None
    words = words[1:]
    for index, word in enumerate(words):
        if word in (">", "2>") or word.startswith(("2>", ">")):
            return words[:index]
    return words


def _without(words: list[str], flag: str, values: int) -> tuple[list[str], list[str]]:
    """``words`` without ``flag`` and the ``values`` words after it, and what was removed."""
    if flag not in words:
        return words, []
    at = words.index(flag)
    return words[:at] + words[at + 1 + values:], words[at + 1:at + 1 + values]


@pytest.fixture(scope="module")
def snakemake_lines() -> list[list[str]]:
    run = subprocess.run(["snakemake", "-n", "-p", "-F", "--cores", "2", "reproduce_all", "--config", "profile=mini"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = [line.removeprefix("Shell command: ") for line in run.stdout.splitlines() if line.startswith("Shell command: ")]
    assert lines
    return [words for words in map(_spgnet_words, lines) if words is not None]


@pytest.fixture(scope="module")
def dvc_lines() -> list[list[str]]:
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        stages = list(repo.index.stages)
    assert stages
    return [words for words in (_spgnet_words(stage.cmd) for stage in stages if stage.cmd) if words is not None]


def test_the_two_pipelines_run_the_same_commands(snakemake_lines, dvc_lines):
    snakemake, evaluated_in_training = set(), {}
    for words in snakemake_lines:
        words, _ = _without(words, "--resume", 0)
        words, evaluation = _without(words, "--evaluate-out", 1)
        if evaluation:
            words, predictions = _without(words, "--predictions", 1)
            evaluated_in_training[evaluation[0]] = predictions[0]
        snakemake.add(tuple(words))
    dvc, evaluations_of_dvc = set(), {}
    for words in dvc_lines:
        words, settings = _without(words, "--settings", 1)
        if words[0] in ("train", "evaluate", "attention"):
            run = words[1] if words[0] == "train" else None
            assert settings and settings[0].startswith("params.yaml:runs."), words
            if run is not None:
                assert settings[0] == f"params.yaml:runs.{run}"
        if words[0] == "evaluate" and words[words.index("--out") + 1] in evaluated_in_training:
            evaluations_of_dvc[words[words.index("--out") + 1]] = words
            continue
        dvc.add(tuple(words))
    assert dvc == snakemake
    # what a Snakemake training job evaluates itself, a DVC stage evaluates: the same outputs, the run's own row
    assert sorted(evaluations_of_dvc) == sorted(evaluated_in_training)
    for out, words in evaluations_of_dvc.items():
        assert words[words.index("--predictions") + 1] == evaluated_in_training[out]
        assert f"/runs/{words[1]}/" in words[words.index("--checkpoint") + 1]


def test_every_dvc_stage_takes_its_command_from_the_generated_plan():
    import yaml

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        cmd = stage.get("do", stage)["cmd"]
        if name == "data":
            assert cmd == "${item.generate}"
        else:
            assert cmd.startswith("${") and cmd.endswith("}") and " " not in cmd, (name, cmd)


def test_every_snakemake_rule_takes_its_spgnet_line_from_the_commands_module():
    for path in sorted((ROOT / "workflow" / "rules").glob("*.smk")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            assert not any(f'"{prefix}' in code or f" {prefix}" in code.replace('" + ', " ")
                           for prefix in ("spgnet train", "spgnet evaluate", "spgnet prepare-data", "spgnet report",
                                          "spgnet curves", "spgnet profile", "spgnet attention", "spgnet memory",
                                          "spgnet baseline", "spgnet make-synthetic")), f"{path.name}:{number}: {line}"


def test_a_path_with_a_space_or_non_ascii_characters_stays_one_argument():
    plan = make_plan("smoke")
    words = commands.train(plan, next(iter(plan.runs)), 0, data_root="/data/dätä sét", weights_root="/w eights")
    line = commands.shell(words)
    assert shlex.split(line) == words
    assert "/data/dätä sét" in shlex.split(line) and "/w eights" in shlex.split(line)
