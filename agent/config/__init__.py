"""One typed configuration: TOML file, then CONNSCOPE_* environment, then flags."""
