"""The command line: argparse commands; errors become one line and an exit code."""
