"""The configuration hashes of every runnable experiment under every profile, pinned.

A hash names a training run's checkpoint (what ``--resume`` accepts), which rows share one training
run, and Snakemake's rerun trigger, so a refactoring of the settings must leave every hash as it
was. ``tests/data/config_hashes.json`` holds ``{"<profile>/<experiment>": {"train": hash of the
model and train sections, "eval": hash of the eval section}}`` as the settings code computed it at
commit bc834f6 (before the settings were rebuilt one way, issue 23). A change that is meant to
change a hash regenerates the file and says why in its commit.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spgnet.config import ConfigError, config_hash, load_profile, load_registry, resolve

PINNED = json.loads((Path(__file__).parent / "data" / "config_hashes.json").read_text())
PROFILES = ("mini", "smoke", "paper", "rehearsal")


def current_hashes() -> dict:
    hashes = {}
    for name in PROFILES:
        profile = load_profile(name, data_root="/data")
        for experiment in load_registry().values():
            if not experiment.reproducible:
                continue
            try:
                cfg = resolve(experiment, profile)
            except ConfigError:  # a profile without the row's data set (smoke) resolves no config for it
                continue
            hashes[f"{name}/{experiment.name}"] = {"train": config_hash(cfg.model, cfg.train),
                                                   "eval": config_hash(cfg.eval)}
    return hashes


def test_every_pinned_hash_is_unchanged():
    current = current_hashes()
    assert sorted(current) == sorted(PINNED)
    changed = {key: (PINNED[key], current[key]) for key in PINNED if current[key] != PINNED[key]}
    assert not changed, f"{len(changed)} hashes changed, e.g. {next(iter(changed.items()))}"


@pytest.mark.parametrize("profile", PROFILES)
def test_the_pins_cover_every_profile(profile):
    assert any(key.startswith(f"{profile}/") for key in PINNED)
