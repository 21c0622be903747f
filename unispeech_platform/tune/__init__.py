"""Ray Tune sweeps over job-config keys: each trial a Ray Train run (Train V2 driver function), ASHA on
trial_step, a parent MLflow run with nested trial runs, trials table / knob plot / best-config YAML at the end."""
