"""Sub-commands of `enoc` that belong to no single part."""
