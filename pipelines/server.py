"""The team tracking server on PostgreSQL: ``python pipelines/server.py --port 5000`` (same as ``mnist99 server``)."""
import sys

from mnist99.cli import main

if __name__ == "__main__":
    sys.exit(main(stage="server"))
