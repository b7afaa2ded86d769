"""Components that ship with the core, registered through the same hooks as third-party plugins."""
