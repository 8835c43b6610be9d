"""Case-study runners: one module per case study, each with ``run(cfg, run_dir)``."""
