"""One process per GPU in the workflow: the paper profile's command lines (local dry runs) and the
SLURM submission the executor plugin makes for a training job (fake SLURM commands record it)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


from spgnet.config import PROJECT_ROOT, load_profile, load_registry
from spgnet.workflow.plan import make_plan

#: CPUs a paper-profile training job asks for (params/profiles/paper.yaml), shared by its 8 ranks
TRAIN_RESOURCES = load_profile("paper", data_root="/data").resources["train"]
TRAIN_THREADS = TRAIN_RESOURCES.threads

BIN = Path(sys.executable).parent


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SNAKEMAKE_SLURM"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    env.update(extra)
    return env


def _shell_commands(*args: str, cwd=PROJECT_ROOT, home: Path | None = None) -> list[str]:
    """The shell commands of a dry run; ``home`` is a HOME whose torchvision cache holds (empty)
    files under the ImageNet file names the paper profile's weights_root needs."""
    env = _env(HOME=str(home)) if home else _env()
    run = subprocess.run(["snakemake", "-n", "-p", "--forceall", *args], cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:] + run.stdout[-2000:]
    return re.findall(r"^Shell command: (.*)$", run.stdout, re.M)


def _paper_root(tmp_path: Path) -> Path:
    for folder in ("cityscapes", "VOCdevkit/VOC2012", "person_part"):
        (tmp_path / "data" / folder).mkdir(parents=True)
    return tmp_path / "data"


def _weights_home(tmp_path: Path) -> Path:
    """A HOME with the paper profile's weights_root (torchvision's cache) holding every file it needs
    (the workflow's start check only looks for the files; `spgnet weights check` reads them)."""
    from spgnet.models.weights import plan_backbones, weights_file_name

    cache = tmp_path / "home/.cache/torch/hub/checkpoints"
    cache.mkdir(parents=True)
    for backbone in plan_backbones(make_plan("paper", data_root=str(tmp_path))):
        (cache / weights_file_name(backbone)).touch()
    return tmp_path / "home"


def _trained_for_table3_and_attention(data: Path) -> set[str]:
    plan = make_plan("paper", data_root=str(data))
    rows = [e.name for e in load_registry().values() if e.table == "3" and e.name in plan.evaluations]
    return {plan.evaluations[e].run for e in [*rows, plan.attention_experiment()]}


@pytest.mark.parametrize("gpus", [8, 4])
def test_paper_dry_run_launches_one_process_per_gpu_in_gpu_slots(tmp_path, gpus):
    data = _paper_root(tmp_path)
    lines = _shell_commands("table3", "attention", "--cores", "8", "--resources", f"gpu={gpus}",
                            "--config", "profile=paper", f"data_root={data}", home=_weights_home(tmp_path))
    train = [line for line in lines if " spgnet train " in line]
    # the 8 threads --cores gives the job, shared by its processes (not the profile's threads / 8)
    launch = (f"OMP_NUM_THREADS={min(TRAIN_THREADS, 8) // gpus} python -m spgnet.workflow.gpu_slots --gpus {gpus} -- "
              f"torchrun --standalone --nproc_per_node {gpus} -m spgnet train ")
    assert train and all(line.startswith(launch) for line in train), train[:2]
    assert {line[len(launch):].split()[0] for line in train} == _trained_for_table3_and_attention(data)
    evaluate = [line for line in lines if " evaluate " in line]
    assert evaluate and all(re.match(r"OMP_NUM_THREADS=\d+ python -m spgnet.workflow.gpu_slots --gpus 1 -- spgnet evaluate ", line)
                            for line in evaluate), evaluate[:2]
    attention = [line for line in lines if " attention " in line]
    assert len(attention) == 1 and attention[0].startswith("python -m spgnet.workflow.gpu_slots --gpus 1 -- spgnet attention ")


def test_readme_paper_command_counts_gpus_and_launches_them(tmp_path):
    """The README's paper-scale command, as a dry run: it passes Snakemake the GPU count."""
    readme = (PROJECT_ROOT / "README.md").read_text()
    [command] = re.findall(r"^snakemake --cores all --resources gpu=8 .*profile=paper data_root=/data/sets$", readme, re.M)
    words = shlex.split(command.replace("/data/sets", str(_paper_root(tmp_path))))
    lines = _shell_commands(*words[1:], home=_weights_home(tmp_path))
    train = [line for line in lines if " spgnet train " in line]
    assert len(train) == len(make_plan("paper", data_root=str(tmp_path / "data")).runs)
    assert all("python -m spgnet.workflow.gpu_slots --gpus 8 -- torchrun --standalone --nproc_per_node 8 -m spgnet train " in line
               for line in train)


@pytest.mark.parametrize("profile", ["mini", "smoke"])
def test_cpu_profiles_keep_plain_commands(profile):
    lines = _shell_commands("reproduce_all", "--cores", "2", "--config", f"profile={profile}")
    train = [line for line in lines if " train " in line]
    assert len(train) == len(make_plan(profile).train_runs())
    assert all(re.match(r"OMP_NUM_THREADS=\d+ spgnet train \S+ --profile ", line) for line in train), train[:2]
    assert not any("gpu_slots" in line or "torchrun" in line for line in lines)


FAKE_SLURM = '''#!{python}
"""Fake SLURM commands: record the call, answer like SLURM (sbatch refuses, to end the run)."""
import json, os, sys
name = os.path.basename(sys.argv[0])
with open(os.environ["FAKE_SLURM_LOG"], "a") as log:
    log.write(json.dumps({{"tool": name, "argv": sys.argv[1:], "env": {{k: os.environ.get(k) for k in
              ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID", "OMP_NUM_THREADS")}}}}) + "\\n")
if name == "scontrol":
    print("MaxArraySize = 1001\\nMinJobAge = 300 sec")
elif name == "sacctmgr":
    print("testacct")
elif name == "sbatch":
    sys.exit("fake sbatch: submission recorded")
elif name == "srun":  # the job step: SLURM gives it the GPUs it asks for
    args = sys.argv[1:]
    start = next(i for i, a in enumerate(args) if not a.startswith("-"))
    gpus = [int(a.split("=")[1]) for a in args[:start] if a.startswith("--gpus=")]
    env = dict(os.environ, SLURM_JOB_ID="4242", CUDA_VISIBLE_DEVICES=",".join(map(str, range(gpus[0] if gpus else 0))))
    os.execvpe(args[start], args[start:], env)
elif name == "torchrun":  # stands in for the training: writes the rule's outputs
    out = sys.argv[sys.argv.index("--out") + 1]
    os.makedirs(out, exist_ok=True)
    for output in ("checkpoint.pt", "train_metrics.json", "train_log.csv", "untrained.json"):
        open(os.path.join(out, output), "w").close()
'''


def _calls(log: Path, tool: str) -> list[dict]:
    return [c for c in map(json.loads, log.read_text().splitlines()) if c["tool"] == tool]


@pytest.mark.slow
def test_slurm_profile_submits_one_task_with_all_gpus_and_torchrun_inside(tmp_path):
    pytest.importorskip("snakemake_executor_plugin_slurm")
    root = tmp_path / "project"
    root.mkdir()
    for item in ("Snakefile", "workflow", "params"):
        (shutil.copytree if (PROJECT_ROOT / item).is_dir() else shutil.copy)(PROJECT_ROOT / item, root / item)
    profile = root / "workflow/profiles/slurm/config.yaml"  # filled in as the README says
    profile.write_text(profile.read_text().replace("<your account>", "testacct")
                       .replace("<your CPU partition>", "cpu").replace("<your GPU partition>", "gpu"))
    data = _paper_root(tmp_path)
    summary = root / "results/paper/data/cityscapes/summary.json"  # the data step has run
    summary.parent.mkdir(parents=True)
    summary.write_text("{}")
    fake_bin = tmp_path / "slurm-bin"
    fake_bin.mkdir()
    (fake_bin / "fake.py").write_text(FAKE_SLURM.format(python=sys.executable))
    (fake_bin / "fake.py").chmod(0o755)
    for tool in ("sbatch", "srun", "sacct", "squeue", "sacctmgr", "sshare", "scontrol", "sinfo", "scancel", "torchrun"):
        (fake_bin / tool).symlink_to("fake.py")
    log = tmp_path / "calls.jsonl"
    env = _env(SPGNET_ROOT=str(root), FAKE_SLURM_LOG=str(log), HOME=str(_weights_home(tmp_path)),
               PATH=f"{fake_bin}{os.pathsep}{BIN}{os.pathsep}{os.environ['PATH']}")
    target = "results/paper/runs/t3-1stage/seed0/checkpoint.pt"

    submit = subprocess.run(["snakemake", "--workflow-profile", "workflow/profiles/slurm", "--retries", "0",
                             "--seconds-between-status-checks", "1", "--slurm-init-seconds-before-status-checks", "1",
                             target, "--config", "profile=paper", f"data_root={data}"],
                            cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert "fake sbatch: submission recorded" in submit.stdout + submit.stderr, submit.stderr[-3000:]
    [sbatch] = _calls(log, "sbatch")
    args = sbatch["argv"]
    for flag in ("--nodes=1", "--gpus=8", f"--cpus-per-task={TRAIN_THREADS}", "--requeue"):
        assert flag in args, args
    for option, value in (("--mem", str(TRAIN_RESOURCES.mem_mb)), ("-t", "2880"), ("-p", "gpu"), ("-A", "testacct")):
        assert args[args.index(option) + 1] == value
    assert not [a for a in args if a.startswith(("--ntasks", "-n"))], args  # one task (SLURM's default)
    [wrap] = [a[len("--wrap="):] for a in args if a.startswith("--wrap=")]
    assert "--target-jobs 'train:run=t3-1stage,seed=0'" in wrap

    # the batch job itself, as SLURM would start it on the node (the submitting Snakemake made the
    # files it waits for; it removed them when it stopped)
    for waited in re.findall(r"--wait-for-files '([^']+)'", wrap):
        Path(waited).touch()
    job = subprocess.run(wrap, shell=True, cwd=root, env={**env, "SLURM_JOB_ID": "4242", "SLURM_GPUS": "8"},
                         capture_output=True, text=True, timeout=300)
    assert job.returncode == 0, job.stderr[-3000:]
    [srun] = _calls(log, "srun")  # one job step, one task, all eight GPUs
    assert srun["argv"][0] == "-n1" and "--gpus=8" in srun["argv"] and "--nodes=1" in srun["argv"]
    assert not [a for a in srun["argv"] if a.startswith("--ntasks")]
    [torchrun] = _calls(log, "torchrun")
    assert torchrun["argv"] == ["--standalone", "--nproc_per_node", "8", "-m", "spgnet", "train", "t3-1stage",
                                "--profile", "paper", "--data-root", str(data),
                                "--weights-root", str(tmp_path / "home/.cache/torch/hub/checkpoints"), "--seed", "0",
                                "--out", "results/paper/runs/t3-1stage/seed0", "--resume",
                                "--untrained-out", "results/paper/runs/t3-1stage/seed0/untrained.json"]
    # each rank: the threads the job's Snakemake gives it (the node's CPUs, at most the profile's) / 8
    from snakemake.utils import available_cpu_count

    per_rank = max(1, min(TRAIN_THREADS, available_cpu_count()) // 8)
    assert torchrun["env"] == {"CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7", "SLURM_JOB_ID": "4242", "OMP_NUM_THREADS": str(per_rank)}
    assert (root / target).exists()
