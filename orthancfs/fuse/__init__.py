"""The pyfuse3 frontend: translates kernel requests into tree-model calls."""
