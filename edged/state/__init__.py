"""What a device keeps on disk: the example store, versioned heads and models, the backbone cache, importers."""
