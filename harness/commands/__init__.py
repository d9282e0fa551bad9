"""Sub-commands of `c6bench`: each module defines ``register(subparsers)`` and sets ``func`` on its parser."""
