"""``python -m annsnn`` runs the command-line interface."""
from annsnn.cli.entry import main

__all__: list[str] = []

if __name__ == "__main__":
    main()
