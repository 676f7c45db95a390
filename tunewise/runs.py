"""Open a run directory from what the user names: a config file (the run is created from it) or a run directory (its
config.yaml, as the run was started)."""

from __future__ import annotations

from pathlib import Path

from tunewise.config import Config, ConfigError, load_config
from tunewise.record import ensure_record
from tunewise.rundir import RunDir, atomic_write_text
from tunewise.runlock import writing_run


def init_run(config: Config) -> RunDir:
    """Create the run directory and write the fully resolved config into it (refused while another process writes
    the run: tunewise/runlock.py)."""
    run = RunDir.of(config.run_dir)
    with writing_run(run.root, "init"):
        atomic_write_text(run.config, config.to_yaml())
        ensure_record(config, run.root)  # monitor: run.json (status validating for a new run)
    return run


def config_of_run(target: str | Path, overrides: list[str] | None = None) -> tuple[Config, RunDir]:
    """Accept a run directory (its config.yaml) or a config file; return the config and its run directory."""
    path = Path(target)
    if path.is_dir():
        if not (path / "config.yaml").is_file():
            raise ConfigError(f"{path} is not a run directory (no config.yaml); pass a run directory or a config file")
        config = load_config(path / "config.yaml", overrides)
        # a run directory that was moved is still itself
        config.output_dir, config.name = str(path.parent), path.name
        return config, RunDir.of(path)
    config = load_config(path, overrides)
    return config, init_run(config)
