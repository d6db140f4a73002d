"""Where policies come from: a directory of YAML files (standalone), or ConfigMaps (cluster)."""
