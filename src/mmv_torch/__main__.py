"""``python -m mmv_torch`` runs the command-line interface."""

from mmv_torch.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
