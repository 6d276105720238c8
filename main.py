"""Entry point: without arguments the GUI, otherwise the command line (main.py --help)."""
import sys


def start_gui():
    try:
        from app.main_window import run_app
    except ImportError as e:
        print(f"error: the GUI is not available ({e}); see main.py --help for the command line", file=sys.stderr)
        return 1
    return run_app()


if __name__ == "__main__":
    if len(sys.argv) > 1:
        from pose_core.cli import main
        sys.exit(main(sys.argv[1:]))
    sys.exit(start_gui())
