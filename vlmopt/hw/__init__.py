"""Hardware model: GPU catalog, MIG geometry, NVML inventory, model architectures."""
