"""One module per ``mixgrpo`` subcommand.

Each module defines ``NAME`` (the subcommand), ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``; the CLI discovers them, so a
new command is a new file here and nothing else.
"""
