import sys

try:  # an interrupt while the command line itself is being imported ends cleanly too
    from divgen.cli import run
except KeyboardInterrupt:
    print("divgen: interrupted", file=sys.stderr)
    raise SystemExit(130) from None

run()
