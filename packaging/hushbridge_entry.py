"""The standalone build's entry point (PyInstaller freezes this script as ``hushbridge``).

Besides the CLI it answers ``hushbridge -m <module> ...`` as ``python -m`` would: hushbridge
starts child processes that way (the fused kernels' background compile, the Resolve script's
cleaning and measuring commands), and a frozen program has no separate interpreter to ask.
"""
import sys


def _main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "-m" and sys.argv[2].split(".")[0] == "hushbridge":
        import runpy

        module = sys.argv[2]
        sys.argv = [sys.argv[0], *sys.argv[3:]]
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        return
    from hushbridge.cli import console_main

    console_main()


if __name__ == "__main__":
    _main()
